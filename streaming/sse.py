"""The event stream of active connection counts, in Server-Sent Events format."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from .presence import Presence

logger = logging.getLogger(__name__)

# Seconds without an event after which a comment line keeps proxies and
# browsers from timing the stream out.
HEARTBEAT_INTERVAL = 10.0
# Minimum seconds between two events to one client: a burst of changes is
# sent as at most ten events a second, the last one carrying the final count.
MIN_EVENT_GAP = 0.1


def format_event(data: dict[str, object]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


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
            changed.clear()
            if presence.total != sent:
                sent = presence.total
                yield format_event({"active_connections": sent})
                await asyncio.sleep(MIN_EVENT_GAP)
                continue
            try:
                await asyncio.wait_for(changed.wait(), HEARTBEAT_INTERVAL)
            except TimeoutError:
                yield HEARTBEAT
