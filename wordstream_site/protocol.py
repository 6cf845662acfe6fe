"""uvicorn's sans-I/O WebSocket protocol, with less memory per connection.

An idle connection's memory is mostly Python objects held by the protocol
instance. Three of them are larger than what they do needs:

- the receive queue, an asyncio.Queue: three deques of 760 bytes each, even
  when empty, for a queue that contains one or two events at a time;
- the writable flag, an asyncio.Event: one more deque;
- the handshake's request and response, with their headers (about 3 KB),
  which are never read again once the handshake is done.

This class replaces the first two with objects of a few dozen bytes and
drops the third after the handshake. It relies on the attributes of the
pinned uvicorn version, and tests/test_ws_protocol.py checks them.
"""

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)


class EventQueue:
    """An unbounded FIFO of ASGI events with one reader at a time.

    Only the methods the protocol calls are provided: put_nowait(), get()
    and empty().
    """

    __slots__ = ("_events", "_reader")

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._reader: asyncio.Future[None] | None = None

    def put_nowait(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def empty(self) -> bool:
        return not self._events

    async def get(self) -> dict[str, Any]:
        if self._reader is not None:
            raise RuntimeError("another coroutine is already waiting for an event")
        while not self._events:
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return self._events.pop(0)


class Flag:
    """A set-or-clear flag that coroutines wait for, like asyncio.Event."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """The protocol that `python -m wordstream_site.serve` runs for WebSockets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = EventQueue()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and self.response is not None:
            self._release_handshake()

    def _release_handshake(self) -> None:
        """Free the handshake's request and response, used only to respond to it.

        websockets' parser keeps the request in its suspended generator for
        the connection's lifetime, so its headers are emptied in place too.
        """
        self.request.headers.clear()
        self.request = None
        self.response = None
