"""The production server's WebSocket protocol class, in uvicorn in this process."""

import asyncio
import contextlib
import gc
import weakref

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode

from streaming.fanout import FRAMES_EXTENSION, text_frame
from wordstream_site.protocol import (
    ConnectionState,
    EventQueue,
    Flag,
    WebSocketProtocol,
)

from .clients import SansIOWebSocket
from .servers import free_port

WAIT = 5.0


async def test_event_queue_returns_events_in_order():
    queue = EventQueue()
    assert queue.empty()
    queue.put_nowait({"n": 1})
    queue.put_nowait({"n": 2})
    assert not queue.empty()
    assert await queue.get() == {"n": 1}
    assert await queue.get() == {"n": 2}
    assert queue.empty()


async def test_event_queue_get_waits_for_put():
    queue = EventQueue()
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait({"n": 1})
    assert await asyncio.wait_for(reader, WAIT) == {"n": 1}


async def test_event_queue_rejects_second_reader():
    queue = EventQueue()
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already waiting"):
        await queue.get()
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    # A cancelled reader leaves the queue usable.
    queue.put_nowait({"n": 1})
    assert await asyncio.wait_for(queue.get(), WAIT) == {"n": 1}


async def test_flag_wakes_every_waiter_when_set():
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), WAIT) == [True] * 3
    flag.clear()
    assert not flag.is_set()
    late = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert not late.done()
    late.cancel()


class EchoApp:
    """Accepts each WebSocket, echoes its text messages and records the close.

    It also tries the frame writer before it accepts, and right after it
    sends a close in reply to a client's "close" message.
    """

    def __init__(self) -> None:
        self.closed: asyncio.Future[int] | None = None
        self.scope: dict | None = None
        self.written_before_accept: bool | None = None
        self.written_after_close: bool | None = None

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "websocket"
        self.scope = scope
        self.closed = asyncio.get_running_loop().create_future()
        assert (await receive())["type"] == "websocket.connect"
        write = scope["extensions"].get(FRAMES_EXTENSION, {}).get("write")
        if write is not None:
            self.written_before_accept = write(text_frame("before accept"))
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                self.closed.set_result(event["code"])
                return
            if event["text"] == "close":
                await send({"type": "websocket.close", "code": 4000})
                self.written_after_close = write(text_frame("after close"))
                continue
            await send({"type": "websocket.send", "text": event["text"].upper()})


@pytest.fixture
async def start_echo_server():
    """Start uvicorn with WebSocketProtocol and EchoApp; stopped after the test."""
    running = []

    async def start(deflate: bool = False, **options):
        app = EchoApp()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=free_port(),
            ws=WebSocketProtocol,
            ws_per_message_deflate=deflate,
            lifespan="off",
            log_level="warning",
            **options,
        )
        server = uvicorn.Server(config)
        running.append((server, asyncio.ensure_future(server.serve())))
        async with asyncio.timeout(WAIT):
            while not server.started:
                await asyncio.sleep(0.01)
        return server, app, f"ws://127.0.0.1:{config.port}/"

    yield start
    for server, task in running:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT)


@pytest.fixture
async def echo_server(start_echo_server):
    return await start_echo_server()


def only_protocol(server: uvicorn.Server) -> WebSocketProtocol:
    (protocol,) = server.server_state.connections
    assert isinstance(protocol, WebSocketProtocol)
    return protocol


async def test_connection_keeps_no_handshake_or_asyncio_queue(echo_server):
    server, app, url = echo_server
    async with connect(url) as websocket:
        await websocket.send("hello")
        assert await asyncio.wait_for(websocket.recv(), WAIT) == "HELLO"
        protocol = only_protocol(server)
        assert protocol.request is None
        assert protocol.response is None
        # The replacements took the place of uvicorn's own objects, under
        # the names uvicorn reads.
        assert isinstance(protocol.queue, EventQueue)
        assert isinstance(protocol.writable, Flag)
        assert isinstance(protocol.conn, ConnectionState)
        leftovers = [
            name
            for name, value in vars(protocol).items()
            if isinstance(value, asyncio.Queue | asyncio.Event)
        ]
        assert leftovers == []
    assert await asyncio.wait_for(app.closed, WAIT) == 1000


async def test_send_waits_while_transport_is_paused(echo_server):
    server, _, url = echo_server
    async with connect(url) as websocket:
        await websocket.send("one")
        assert await asyncio.wait_for(websocket.recv(), WAIT) == "ONE"
        protocol = only_protocol(server)
        protocol.pause_writing()
        await websocket.send("two")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(websocket.recv(), 0.3)
        protocol.resume_writing()
        assert await asyncio.wait_for(websocket.recv(), WAIT) == "TWO"


async def test_frame_writer_writes_until_paused_or_closed(echo_server):
    server, app, url = echo_server
    async with connect(url) as websocket:
        await websocket.send("one")
        assert await asyncio.wait_for(websocket.recv(), WAIT) == "ONE"
        write = app.scope["extensions"][FRAMES_EXTENSION]["write"]
        assert write(text_frame("direct"))
        assert await asyncio.wait_for(websocket.recv(), WAIT) == "direct"

        protocol = only_protocol(server)
        protocol.pause_writing()
        assert not write(text_frame("while paused"))
        protocol.resume_writing()
        assert write(text_frame("resumed"))
        assert await asyncio.wait_for(websocket.recv(), WAIT) == "resumed"
    assert await asyncio.wait_for(app.closed, WAIT) == 1000
    assert not write(text_frame("after close"))
    # Closing broke the cycle from the scope back to the protocol.
    assert FRAMES_EXTENSION not in app.scope["extensions"]


async def test_frame_writer_waits_for_handshake(echo_server):
    _, app, url = echo_server
    async with connect(url) as websocket:
        await websocket.send("one")
        # The echo is the first frame: the write before the accept was declined.
        assert await asyncio.wait_for(websocket.recv(), WAIT) == "ONE"
    assert app.written_before_accept is False


async def test_frame_writer_stops_after_close(echo_server):
    _, app, url = echo_server
    async with connect(url) as websocket:
        await websocket.send("close")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(websocket.recv(), WAIT)
    # No data frame followed the close frame.
    assert closed.value.rcvd.code == 4000
    assert app.written_after_close is False


async def test_frame_writer_declines_deflate(start_echo_server):
    _, app, url = await start_echo_server(deflate=True)
    async with connect(url, compression="deflate") as websocket:
        await websocket.send("one")
        assert await asyncio.wait_for(websocket.recv(), WAIT) == "ONE"
        write = app.scope["extensions"][FRAMES_EXTENSION]["write"]
        # A compressed connection needs frames that websockets encodes.
        assert not write(text_frame("uncompressed"))


async def test_closed_connection_freed_without_collector(echo_server):
    server, app, url = echo_server
    gc.disable()
    try:
        async with connect(url) as websocket:
            await websocket.send("one")
            assert await asyncio.wait_for(websocket.recv(), WAIT) == "ONE"
            protocol = weakref.ref(only_protocol(server))
        assert await asyncio.wait_for(app.closed, WAIT) == 1000
        # Reference counting alone frees the protocol once its task is done.
        async with asyncio.timeout(WAIT):
            while protocol() is not None:
                await asyncio.sleep(0.01)
    finally:
        gc.enable()


async def wait_for_ping_due(protocol: WebSocketProtocol) -> bytes:
    """Return the payload of the next due ping once it waits in the sink."""
    async with asyncio.timeout(WAIT):
        while protocol.sink.ping is None:
            await asyncio.sleep(0.005)
    return protocol.pending_ping_payload


async def test_due_ping_rides_next_frame(start_echo_server):
    # With the default WORD_INTERVAL the ping waits half the timeout, 0.5 s,
    # for a frame.
    server, app, url = await start_echo_server(
        ws_ping_interval=0.2, ws_ping_timeout=1.0
    )
    async with SansIOWebSocket(url, "test") as websocket:
        protocol = only_protocol(server)
        payload = await wait_for_ping_due(protocol)
        write = app.scope["extensions"][FRAMES_EXTENSION]["write"]
        assert write(text_frame("tick"))
        assert protocol.sink.ping is None
        # A ping written when it fell due would have arrived first.
        frame = await websocket.next_frame()
        assert (frame.opcode, frame.data) == (Opcode.TEXT, b"tick")
        frame = await websocket.next_frame()
        assert (frame.opcode, frame.data) == (Opcode.PING, payload)
        assert protocol.sink.ping is None


async def test_waiting_ping_sent_alone(start_echo_server):
    server, _, url = await start_echo_server(ws_ping_interval=0.2, ws_ping_timeout=1.0)
    async with SansIOWebSocket(url, "test") as websocket:
        protocol = only_protocol(server)
        payloads = []
        # Four pings span more than the timeout, so the connection is still
        # open only if each pong reached the server.
        for _ in range(4):
            payloads.append(await wait_for_ping_due(protocol))
            frame = await websocket.next_frame()
            assert (frame.opcode, frame.data) == (Opcode.PING, payloads[-1])
        assert len(set(payloads)) == 4
        assert not protocol.close_sent


async def test_first_pings_spread_over_interval(start_echo_server):
    server, _, url = await start_echo_server(ws_ping_interval=10.0)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(20):
            await stack.enter_async_context(connect(url))
        now = asyncio.get_running_loop().time()
        connections = server.server_state.connections
        # A ping that already fell due waits in the sink, because the app
        # writes no frames.
        delays = [first_ping_due(protocol) - now for protocol in connections]
    assert len(delays) == 20
    assert max(delays) <= 10.0
    # Twenty delays drawn evenly from 10 s all lie within 5 s of each other
    # with a probability of 21 / 2**20, about 2 in 100,000.
    assert max(delays) - min(delays) > 5.0


def first_ping_due(protocol: WebSocketProtocol) -> float:
    """Return the loop time at which the protocol's first ping falls due."""
    if protocol.ping_timer is None:
        return protocol.ping_sent_at
    return protocol.ping_timer.when()
