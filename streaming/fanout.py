"""Fan-out of each word to the WebSocket consumers of this process."""

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from .history import Word
from .metrics import (
    BROADCAST_DURATION,
    FANOUT_SUBSCRIBERS,
    FRAMES_DROPPED,
    FRAMES_SENT,
    WORDS_BROADCAST,
)

logger = logging.getLogger(__name__)

# The scope extension through which a server takes frames that the
# application encoded: scope["extensions"][FRAMES_EXTENSION]["write"] is a
# FrameWriter. The production server's WebSocket protocol provides it.
FRAMES_EXTENSION = "wordstream.websocket.frames"

# Writes one complete WebSocket frame to the socket at once and returns True,
# or returns False when the frame must go through the ASGI send instead:
# before the handshake, after a close, or while the socket's buffer is full.
FrameWriter = Callable[[bytes], bool]


def text_frame(text: str) -> bytes:
    """Return text as a complete, unmasked WebSocket text frame (RFC 6455 5.2)."""
    payload = text.encode()
    length = len(payload)
    # FIN set, opcode 1 (text); the length takes 7 bits, or 16 or 64 more.
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = bytes((0x81, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + length.to_bytes(8, "big")
    return header + payload


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A word encoded once per tick for every subscriber."""

    word: Word
    # The ASGI websocket.send message.
    message: dict[str, Any]
    # The same text as a complete WebSocket frame, for a FrameWriter.
    frame: bytes

    @classmethod
    def of(cls, word: Word) -> "Outgoing":
        text = json.dumps(word.frame())
        return cls(word, {"type": "websocket.send", "text": text}, text_frame(text))


class Subscriber(Protocol):
    def offer(self, outgoing: Outgoing) -> bool:
        """Start sending a word without waiting. Return False when it was dropped."""
        ...

    def close_soon(self, code: int) -> None:
        """Start closing the connection with code, without waiting."""
        ...


def start_eagerly(send: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run a send coroutine until it completes or first has to wait.

    An ASGI send to a socket with room in its buffer completes without
    waiting, and then no task is created. That is the common case, so a tick
    to ten thousand clients stays cheap. A send that waits (uvicorn
    waits while the transport's buffer is over its high-water mark) goes on
    in a task, which is returned, so one slow client never holds up the rest.
    """
    try:
        awaited = send.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_resume(send, awaited))


async def _resume(send: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive a coroutine that start_eagerly() left suspended, as a task would."""
    try:
        while True:
            try:
                if awaited is None:
                    # A bare yield, as in asyncio.sleep(0).
                    await asyncio.sleep(0)
                else:
                    # The coroutine yielded the future it waits on; the flag
                    # is how asyncio's Task recognises such a future.
                    awaited._asyncio_future_blocking = False
                    await awaited
            except BaseException as exc:
                # The future's error, or this task's cancellation, is raised
                # inside the coroutine where it waits, as a task would.
                awaited = send.throw(exc)
            else:
                awaited = send.send(None)
    except StopIteration:
        return
    finally:
        send.close()


class Fanout:
    """The set of this process's consumers and the loop that sends them a word.

    The channel layer carries one message per tick to each process, and this
    loop turns it into one send per client. The frame is encoded once per
    tick, and no send is awaited, so the loop takes the same time whatever
    the state of each client's socket.
    """

    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        # Seconds the last broadcast took, from first send to last.
        self.last_duration = 0.0

    def __len__(self) -> int:
        return len(self._subscribers)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._subscribers))

    def add(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)
        FANOUT_SUBSCRIBERS.set(len(self._subscribers))

    def discard(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        FANOUT_SUBSCRIBERS.set(len(self._subscribers))

    def broadcast(self, word: Word) -> None:
        """Send one word frame to every subscriber."""
        outgoing = Outgoing.of(word)
        started = time.perf_counter()
        dropped = 0
        # A copy: a failed send may discard a subscriber during the loop.
        subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                sent = subscriber.offer(outgoing)
            except Exception as exc:  # noqa: BLE001 - one client must not stop the rest
                logger.debug("send of seq %d failed: %r", word.seq, exc)
                self.discard(subscriber)
                sent = False
            dropped += not sent
        self.last_duration = time.perf_counter() - started
        BROADCAST_DURATION.observe(self.last_duration)
        WORDS_BROADCAST.inc()
        FRAMES_SENT.inc(len(subscribers) - dropped)
        if dropped:
            FRAMES_DROPPED.inc(dropped)
