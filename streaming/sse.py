"""The event stream of active connection counts, in Server-Sent Events format."""

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator

from .cancellation import raise_if_cancel_requested
from .fanout import Fanout, Outgoing
from .history import History, Word
from .presence import Presence
from .recovery import ResumePoint, is_newer, last_seen, recover

logger = logging.getLogger(__name__)

# Seconds without an event after which a comment line keeps proxies and
# browsers from timing the stream out.
HEARTBEAT_INTERVAL = 10.0
# Each wait for a heartbeat is shortened by a random part of the interval, up
# to this fraction. Streams that last sent the same count would otherwise all
# send their heartbeat at once. In the benchmark, 1,000 such heartbeats
# raised the p99 of 5,000 WebSocket clients beside them by 19 to 36%.
HEARTBEAT_JITTER = 0.5
# Minimum seconds between two events to one client: a burst of changes is
# sent as at most ten events a second, the last one carrying the final count.
MIN_EVENT_GAP = 0.1


def format_event(data: dict[str, object], event_id: str | None = None) -> bytes:
    """Return one event; an id is what EventSource sends back as Last-Event-ID."""
    id_line = f"id: {event_id}\n" if event_id is not None else ""
    return f"{id_line}data: {json.dumps(data)}\n\n".encode()


def heartbeat_timeout() -> float:
    """Return the seconds to wait for an event before sending a heartbeat."""
    return HEARTBEAT_INTERVAL * (1 - HEARTBEAT_JITTER * random.random())


def format_word(word: Word) -> bytes:
    return format_event(word.frame(), f"{word.epoch}:{word.seq}")


HEARTBEAT = b": heartbeat\n\n"


async def connection_count_events(presence: Presence) -> AsyncIterator[bytes]:
    """Yield the current count at once, then each new count, until cancelled
    or the server shuts down.

    Django cancels a streaming response when its client disconnects, so the
    subscription is released in the context manager's exit.
    """
    async with presence.watch() as changed:
        sent = None
        while not presence.streams_ended:
            # The wait below may have returned a change in place of a
            # cancellation.
            raise_if_cancel_requested()
            changed.clear()
            if presence.total != sent:
                sent = presence.total
                yield format_event({"active_connections": sent})
                await asyncio.sleep(MIN_EVENT_GAP)
                continue
            try:
                await asyncio.wait_for(changed.wait(), heartbeat_timeout())
            except TimeoutError:
                yield HEARTBEAT


class WordStream:
    """A fan-out subscriber that queues words for one event stream.

    A client whose queue contains WS_MAX_BACKLOG words it has not taken is
    ended, as a WebSocket client that far behind is closed.
    """

    def __init__(self, max_backlog: int) -> None:
        self.words: asyncio.Queue[Word | None] = asyncio.Queue(max_backlog + 1)
        self.max_backlog = max_backlog
        self.ended = False

    def offer(self, outgoing: Outgoing) -> bool:
        if self.ended:
            return False
        if self.words.qsize() >= self.max_backlog:
            logger.warning(
                "ending a word event stream: %d words behind", self.max_backlog
            )
            self.close_soon(0)
            return False
        self.words.put_nowait(outgoing.word)
        return True

    def close_soon(self, code: int) -> None:
        """End the stream after the words already queued."""
        self.ended = True
        self.words.put_nowait(None)


async def word_events(
    fanout: Fanout, history: History, point: ResumePoint | None, max_backlog: int
) -> AsyncIterator[bytes]:
    """Yield the words missed since point, if any, then each live word.

    The stream joins the fan-out before it reads the history, so no word
    falls between the two; words it already sent are skipped.
    """
    stream = WordStream(max_backlog)
    fanout.add(stream)
    try:
        last = None
        if point is not None:
            notice, missed = await recover(history, point)
            last = last_seen(point) if notice["recovered"] else None
            if not notice["recovered"]:
                yield format_event(notice)
            for word in missed:
                yield format_word(word)
                last = word
        loop = asyncio.get_running_loop()
        # The loop time of the next heartbeat. A word skipped as already sent
        # is not an event, so it leaves this unchanged.
        heartbeat_at = loop.time() + heartbeat_timeout()
        while True:
            # The wait below may have returned a word in place of a cancellation.
            raise_if_cancel_requested()
            try:
                word = await asyncio.wait_for(
                    stream.words.get(), max(0.0, heartbeat_at - loop.time())
                )
            except TimeoutError:
                yield HEARTBEAT
                heartbeat_at = loop.time() + heartbeat_timeout()
                continue
            if word is None:
                return
            if is_newer(word, last):
                last = word
                yield format_word(word)
                heartbeat_at = loop.time() + heartbeat_timeout()
    finally:
        fanout.discard(stream)
