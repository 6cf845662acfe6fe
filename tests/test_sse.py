import asyncio

from streaming import sse
from streaming.presence import Presence


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
