"""Fan-out of each word to the WebSocket consumers of this process."""

import json
import logging
import time
from typing import Any, Protocol

from .metrics import BROADCAST_DURATION, FRAMES_DROPPED, FRAMES_SENT, WORDS_BROADCAST

logger = logging.getLogger(__name__)


class Subscriber(Protocol):
    async def deliver(self, message: dict[str, Any]) -> None:
        """Send one ASGI websocket.send message to the client."""
        ...


class Fanout:
    """The set of this process's consumers and the loop that sends them a word.

    The channel layer carries one message per tick to each process, and this
    loop turns it into one send per client. The frame is encoded once per tick,
    not once per client.
    """

    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        # Seconds the last broadcast took, from first send to last.
        self.last_duration = 0.0

    def __len__(self) -> int:
        return len(self._subscribers)

    def add(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)

    def discard(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    async def broadcast(self, word: str, seq: int, ts: int) -> None:
        """Send one word frame to every subscriber."""
        frame = json.dumps({"word": word, "seq": seq, "ts": ts})
        message = {"type": "websocket.send", "text": frame}
        started = time.perf_counter()
        dropped = 0
        # A copy, because a client may disconnect while the loop awaits a send.
        subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                await subscriber.deliver(message)
            except Exception as exc:  # noqa: BLE001 - one client must not stop the rest
                logger.debug("send of seq %d failed: %r", seq, exc)
                self.discard(subscriber)
                dropped += 1
        self.last_duration = time.perf_counter() - started
        BROADCAST_DURATION.observe(self.last_duration)
        WORDS_BROADCAST.inc()
        FRAMES_SENT.inc(len(subscribers) - dropped)
        if dropped:
            FRAMES_DROPPED.inc(dropped)
