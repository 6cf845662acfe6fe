"""uvicorn's sans-I/O WebSocket protocol, with less memory per connection.

An idle connection's memory is mostly Python objects held by the protocol
instance. Three of them take more memory than their use needs:

- the receive queue, an asyncio.Queue: three deques of 760 bytes each, even
  when empty, for a queue that contains one or two events at a time;
- the writable flag, an asyncio.Event: one more deque;
- the handshake's request and response, with their headers (about 3 KB),
  which are never read again once the handshake is done.

This class replaces the first two with objects of a few dozen bytes and
drops the third after the handshake.

It also offers the application a frame writer (streaming.fanout's
FRAMES_EXTENSION in the scope's extensions): a frame encoded once per tick
is written to each socket directly, instead of through send() and
websockets' framing per connection. The writer is a FrameSink, which holds
only the transport, a flag and a waiting ping. The protocol updates the
flag whenever the connection's state or the transport's flow control
changes, so a write reads no other object. Reading the protocol's, the
connection's and the flow control's state on every write made a tick to
10,000 clients about 10% longer.

The sink also carries the keepalive pings. A ping that falls due waits for
the next frame and goes out in the same write, because a ping written on
its own costs one more write and wakes the client once more. The first
ping falls at a random point of the first interval: with uvicorn's
schedule, clients that connect together are pinged together every
interval. With both as uvicorn does them, the three ticks to 10,000 clients
after such a burst of pings took 30 to 50 ms longer.

A text message that is not UTF-8 closes the connection with 1007 and one
warning line, where uvicorn would log a traceback at ERROR per message.

It relies on the attributes of the pinned uvicorn version, and
tests/test_ws_protocol.py and tests/test_faults.py check them.
"""

import asyncio
import logging
import os
import random
from collections.abc import Callable
from typing import Any

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from streaming.fanout import FRAMES_EXTENSION

logger = logging.getLogger(__name__)


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


class FrameSink:
    """A frame writer that writes the application's frames to one transport.

    The fan-out calls it once per client and tick, so it reads only the
    transport and a flag, which the protocol keeps up to date.
    """

    __slots__ = ("open", "ping", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        # True while a frame may be written directly; see
        # WebSocketProtocol._update_sink().
        self.open = False
        # A keepalive ping frame that the next write carries, or None.
        self.ping: bytes | None = None

    def __call__(self, frame: bytes) -> bool:
        if self.open and not self.transport.is_closing():
            if self.ping is None:
                self.transport.write(frame)
            else:
                self.transport.write(frame + self.ping)
                self.ping = None
            return True
        return False


class ConnectionState(ServerProtocol):
    """websockets' server state machine, which reports each change of state.

    on_state_change refers back to the protocol, a cycle that the protocol
    breaks when the connection is lost by setting it to None.
    """

    on_state_change: Callable[[], None] | None = None

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        ServerProtocol.state.fset(self, state)  # type: ignore[attr-defined]
        if self.on_state_change is not None:
            self.on_state_change()


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """The protocol that `python -m wordstream_site.serve` runs for WebSockets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = EventQueue()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()
        # Made in connection_made(); _update_sink() runs before that too.
        self.sink: FrameSink | None = None
        # The timer that writes a ping no frame carried, or None.
        self.ping_carry_timer: asyncio.TimerHandle | None = None
        # The ServerProtocol that uvicorn made becomes a ConnectionState in
        # place: the subclass adds no state of its own, and a second state
        # machine per handshake would cost about 5 microseconds.
        self.conn.__class__ = ConnectionState
        self.conn.on_state_change = self._update_sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.sink = FrameSink(self.transport)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            self.scope["extensions"][FRAMES_EXTENSION] = {"write": self.sink}

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._update_sink()
        if self.ping_carry_timer is not None:
            self.ping_carry_timer.cancel()
            self.ping_carry_timer = None
        self.conn.on_state_change = None
        # Otherwise the sink, and through it the transport, stays alive for
        # as long as the application keeps a reference to the scope.
        if hasattr(self, "scope"):
            self.scope["extensions"].pop(FRAMES_EXTENSION, None)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._update_sink()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._update_sink()

    def _update_sink(self) -> None:
        """Let the sink write while the connection is open and keeps up.

        Called on each change of the connection's state, of the transport's
        flow control and when the connection is lost. A frame must go
        through send() instead before the handshake is done, once a close
        is sent or received, while the transport is over its high-water
        mark, and when an extension such as permessage-deflate changes the
        frames.
        """
        if self.sink is None:
            return
        self.sink.open = (
            self.conn.state is State.OPEN
            and not self.conn.extensions
            and self.writable.is_set()
            and not self.disconnected
        )

    def start_keepalive(self) -> None:
        """Schedule the first ping at a random point of the first interval.

        Otherwise clients that connect together are pinged together in
        every interval.
        """
        if self.ping_interval:
            delay = self.ping_interval * random.random()
            self.ping_timer = self.loop.call_later(delay, self.send_keepalive_ping)

    def send_keepalive_ping(self) -> None:
        """Hand a due ping to the sink, to go out with the next frame.

        A ping that no frame has carried within _ping_carry_wait() seconds
        is written on its own, and so is a ping while the sink is closed.
        The pong deadline and the measured round trip run from now.
        """
        self.ping_timer = None
        sink = self.sink
        if sink is None or not sink.open or self.close_sent:
            super().send_keepalive_ping()
            return
        payload = os.urandom(4)
        self.pending_ping_payload = payload
        self.ping_sent_at = self.loop.time()
        # FIN and opcode 9 (ping), unmasked, four bytes of payload.
        sink.ping = b"\x89\x04" + payload
        if self.ping_carry_timer is not None:
            self.ping_carry_timer.cancel()
        self.ping_carry_timer = self.loop.call_later(
            self._ping_carry_wait(), self._write_waiting_ping
        )
        if self.ping_timeout is None:
            self.schedule_ping()
        else:
            self.pong_timer = self.loop.call_later(
                self.ping_timeout, self.keepalive_timeout
            )

    def _ping_carry_wait(self) -> float:
        """Return how long a due ping waits for a frame, in seconds.

        That is a little over one tick, and at most half the pong timeout.
        """
        wait = 1.5 * settings.WORD_INTERVAL
        if self.ping_timeout is not None:
            wait = min(wait, self.ping_timeout / 2)
        return wait

    def _write_waiting_ping(self) -> None:
        self.ping_carry_timer = None
        sink = self.sink
        if sink is None or sink.ping is None:
            return
        ping, sink.ping = sink.ping, None
        if self.conn.state is State.OPEN and not self.transport.is_closing():
            self.transport.write(ping)

    def send_receive_event_to_app(self) -> None:
        """Pass a complete message on, or close with 1007 if its text is not UTF-8.

        uvicorn would log each such message's traceback at ERROR, so one
        client could fill the log. This logs one line per connection.
        """
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError as exc:
                # Imported here: streaming.proxy needs the app registry,
                # which is not ready when serve.py imports this module.
                from streaming.proxy import client_address

                self.frames = []
                logger.warning(
                    "closing %s: text message is not UTF-8: %s",
                    client_address(self.scope),
                    exc,
                )
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

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


class HTTPProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, freed by reference counting after an upgrade.

    The protocol and its parser refer to each other. uvicorn breaks that
    cycle when the connection is lost, but after a WebSocket upgrade the
    connection belongs to the WebSocket protocol and this one never hears of
    it. The cycle then waits for a full collection, which the server makes
    rare: 5,000 short connections left 17 MB behind.
    """

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]
