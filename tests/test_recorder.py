"""When the connection recorder writes its pending rows."""

from datetime import UTC, datetime

import pytest

from streaming import recorder as recorder_module
from streaming.models import Connection
from streaming.recorder import MAX_FLUSH_DELAY, ConnectionRecorder


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(recorder_module, "monotonic", clock)
    return clock


def open_row(recorder: ConnectionRecorder) -> None:
    recorder.opened(Connection(opened_at=datetime.now(UTC)))


def test_nothing_pending_is_never_due(clock):
    recorder = ConnectionRecorder("host:1:a")
    assert not recorder._flush_due()
    clock.now += MAX_FLUSH_DELAY
    assert not recorder._flush_due()


def test_rows_wait_for_quiet_interval(clock):
    recorder = ConnectionRecorder("host:1:a")
    open_row(recorder)
    # A row arrived during this interval: a burst may still be going on.
    assert not recorder._flush_due()
    # None arrived during the next one.
    assert recorder._flush_due()


def test_busy_rows_flush_after_max_delay(clock):
    recorder = ConnectionRecorder("host:1:a")
    open_row(recorder)
    for _ in range(9):
        clock.now += 0.5
        open_row(recorder)
        assert not recorder._flush_due()
    clock.now += 0.5
    open_row(recorder)
    # The oldest row has now waited MAX_FLUSH_DELAY, though rows keep coming.
    assert recorder._flush_due()
