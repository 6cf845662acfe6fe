import asyncio

from streaming import sse
from streaming.fanout import Fanout
from streaming.history import LocalHistory, Word
from streaming.presence import Presence
from streaming.recovery import ResumePoint


class NoLayer:
    async def group_send(self, group, message):
        pass


async def next_chunk(events) -> bytes:
    return await asyncio.wait_for(anext(events), 2)


async def test_count_stream_sends_heartbeats(monkeypatch):
    monkeypatch.setattr(sse, "HEARTBEAT_INTERVAL", 0.05)
    presence = Presence(NoLayer(), "test")
    events = sse.connection_count_events(presence)
    assert await next_chunk(events) == b'data: {"active_connections": 0}\n\n'
    assert await next_chunk(events) == b": heartbeat\n\n"
    assert await next_chunk(events) == b": heartbeat\n\n"
    await events.aclose()
    assert presence.watcher_count == 0


async def test_count_stream_sends_changes_coalesced(monkeypatch):
    presence = Presence(NoLayer(), "test")
    events = sse.connection_count_events(presence)
    assert await next_chunk(events) == b'data: {"active_connections": 0}\n\n'
    for count in range(1, 51):
        presence.apply_report({"process": "other", "count": count})
    # Fifty changes within one gap arrive as one event with the final count.
    assert await next_chunk(events) == b'data: {"active_connections": 50}\n\n'
    await events.aclose()


async def consume(events, chunks: list[bytes]) -> None:
    async for chunk in events:
        chunks.append(chunk)


async def test_count_stream_cancelled_with_change(monkeypatch):
    """A change and the cancellation arrive together, as when a page that
    closes its WebSocket and its event stream at once is the last client.

    On Python 3.11, asyncio.wait_for() then returns the change instead of
    raising the cancellation.
    """
    # The stream waits for a change at once after its first event.
    monkeypatch.setattr(sse, "MIN_EVENT_GAP", 0)
    # The stream computes its heartbeat timeout as it starts that wait.
    waiting = asyncio.Event()

    def heartbeat_timeout() -> float:
        waiting.set()
        return 10.0

    monkeypatch.setattr(sse, "heartbeat_timeout", heartbeat_timeout)
    presence = Presence(NoLayer(), "test")
    chunks: list[bytes] = []
    task = asyncio.create_task(consume(sse.connection_count_events(presence), chunks))
    await asyncio.wait_for(waiting.wait(), 2)
    assert len(chunks) == 1

    presence.apply_report({"process": "other", "count": 1})
    task.cancel()

    done, _ = await asyncio.wait([task], timeout=2)
    assert done == {task}
    assert task.cancelled()
    assert presence.watcher_count == 0


async def test_word_stream_cancelled_with_word():
    fanout = Fanout()
    chunks: list[bytes] = []
    events = sse.word_events(fanout, LocalHistory(10), None, max_backlog=10)
    task = asyncio.create_task(consume(events, chunks))
    await wait_for_condition(lambda: len(fanout) == 1)

    fanout.broadcast(Word("alpha", 1, 1_000, "epoch"))
    task.cancel()

    done, _ = await asyncio.wait([task], timeout=2)
    assert done == {task}
    assert task.cancelled()
    assert len(fanout) == 0


async def wait_for_condition(predicate, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_heartbeat_interval_is_under_15_seconds():
    assert sse.HEARTBEAT_INTERVAL < 15


def test_heartbeat_timeouts_spread_over_half_interval():
    timeouts = [sse.heartbeat_timeout() for _ in range(1000)]
    assert min(timeouts) >= sse.HEARTBEAT_INTERVAL / 2
    assert max(timeouts) <= sse.HEARTBEAT_INTERVAL
    # Spread out, not bunched: both halves of the range are used.
    middle = sse.HEARTBEAT_INTERVAL * 0.75
    assert sum(timeout < middle for timeout in timeouts) > 300
    assert sum(timeout > middle for timeout in timeouts) > 300


async def test_word_stream_heartbeat_ignores_skipped_words(monkeypatch):
    monkeypatch.setattr(sse, "HEARTBEAT_INTERVAL", 0.2)
    monkeypatch.setattr(sse, "HEARTBEAT_JITTER", 0)
    history = LocalHistory(10)
    newest = history.record("alpha", 1_000, 0)
    fanout = Fanout()
    point = ResumePoint(newest.epoch, newest.seq)
    events = sse.word_events(fanout, history, point, max_backlog=10)
    chunks: list[bytes] = []
    task = asyncio.create_task(consume(events, chunks))
    await wait_for_condition(lambda: len(fanout) == 1)

    # The client already has this word, so each offer of it is skipped.
    async with asyncio.timeout(1):
        while not chunks:
            fanout.broadcast(newest)
            await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert chunks[0] == b": heartbeat\n\n"
