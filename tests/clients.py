"""WebSocket and Server-Sent Events clients for tests against real servers."""

import asyncio
import contextlib
import json

import httpx
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.http11 import Response
from websockets.typing import Origin
from websockets.uri import parse_uri

# Seconds any single wait in a test may take before it fails.
TIMEOUT = 10.0


def origin_of(base_url: str) -> str:
    return base_url.rstrip("/")


SAME_ORIGIN = "same origin"


def ws_connect(ws_url: str, origin: str | None = SAME_ORIGIN, **kwargs):
    """Open a WebSocket with the Origin a page of that server would send, or
    with the given origin, or with none if origin is None.
    """
    if origin == SAME_ORIGIN:
        origin = "http" + ws_url.removeprefix("ws").rsplit("/", 1)[0]
    return connect(ws_url, origin=origin, open_timeout=TIMEOUT, **kwargs)


class SansIOWebSocket:
    """A WebSocket client on websockets' sans-I/O protocol and a TCP stream.

    Besides the protocol's own frames it writes raw bytes, such as part of a
    frame, which the asyncio client cannot. It sends the same Origin as
    ws_connect, and the protocol's replies to pings and to a close frame.
    """

    def __init__(self, ws_url: str, user_agent: str):
        self.uri = parse_uri(ws_url)
        origin = "http" + ws_url.removeprefix("ws").rsplit("/", 1)[0]
        self.protocol = ClientProtocol(self.uri, origin=Origin(origin))
        self.user_agent = user_agent
        self._events: list[Frame | Response] = []

    async def __aenter__(self) -> "SansIOWebSocket":
        self.reader, self.writer = await asyncio.open_connection(
            self.uri.host, self.uri.port
        )
        request = self.protocol.connect()
        request.headers["User-Agent"] = self.user_agent
        self.protocol.send_request(request)
        await self._send_pending()
        response = await self._next_event()
        assert isinstance(response, Response)
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def write_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def next_frame(self, timeout: float = TIMEOUT) -> Frame:
        """Receive the next frame, data or control."""
        event = await self._next_event(timeout)
        assert isinstance(event, Frame)
        return event

    async def _next_event(self, timeout: float = TIMEOUT) -> Frame | Response:
        while not self._events:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self._events.extend(self.protocol.events_received())
            await self._send_pending()
            if not data and not self._events:
                raise EOFError("the server closed the connection")
        return self._events.pop(0)

    async def _send_pending(self) -> None:
        for data in self.protocol.data_to_send():
            # The protocol marks the end of the TCP stream with an empty chunk.
            if data:
                self.writer.write(data)
            elif self.writer.can_write_eof():
                self.writer.write_eof()
        await self.writer.drain()


async def receive_words(ws, count: int, timeout: float = TIMEOUT) -> list[dict]:
    """Receive count word frames."""
    return [
        json.loads(await asyncio.wait_for(ws.recv(), timeout)) for _ in range(count)
    ]


class EventStream:
    """A Server-Sent Events client that reads data events one at a time.

    A background task parses the stream into a queue, so a read that times
    out loses nothing and the next read goes on where it stopped.
    """

    def __init__(self, url: str):
        self.url = url
        self.comments: list[str] = []
        self.events: list[dict] = []
        self._queue: asyncio.Queue[dict | None] = asyncio.Queue()

    async def __aenter__(self) -> "EventStream":
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, read=None))
        self._stream = self._client.stream("GET", self.url)
        self.response = await self._stream.__aenter__()
        self._reader = asyncio.create_task(self._read_events())
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._stream.__aexit__(*exc_info)
        await self._client.aclose()

    async def _read_events(self) -> None:
        data: list[str] = []
        try:
            async for line in self.response.aiter_lines():
                if line.startswith(":"):
                    self.comments.append(line)
                elif line.startswith("data:"):
                    data.append(line.removeprefix("data:").strip())
                elif line == "" and data:
                    self._queue.put_nowait(json.loads("\n".join(data)))
                    data = []
        except httpx.HTTPError:
            pass
        finally:
            # None marks the end of the stream.
            self._queue.put_nowait(None)

    async def next_event(self, timeout: float = TIMEOUT) -> dict:
        event = await asyncio.wait_for(self._queue.get(), timeout)
        if event is None:
            self._queue.put_nowait(None)
            raise EOFError("the event stream ended")
        self.events.append(event)
        return event

    async def wait_for_count(self, count: int, timeout: float = TIMEOUT) -> dict:
        """Read events until one reports count active connections."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no event with {count} active connections")
            event = await self.next_event(remaining)
            if event["active_connections"] == count:
                return event


def metric_value(base_url: str, name: str) -> float:
    """Read one unlabelled metric from a server's /metrics page."""
    text = httpx.get(base_url + "/metrics", timeout=TIMEOUT).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(f"metric {name} not found on {base_url}/metrics")


async def read_json(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def wait_for_seq(ws, seq: int) -> list[dict]:
    """Receive frames until the one with this seq; return them all."""
    frames = []
    while not frames or frames[-1]["seq"] < seq:
        frames.append(await read_json(ws))
    return frames


async def sse_events(response, count: int) -> list[tuple[str | None, dict]]:
    """Read count data events as (id, data) pairs, skipping comments."""
    events: list[tuple[str | None, dict]] = []
    event_id = None
    lines = response.aiter_lines()
    while len(events) < count:
        line = await asyncio.wait_for(anext(lines), TIMEOUT)
        if line.startswith("id:"):
            event_id = line.removeprefix("id:").strip()
        elif line.startswith("data:"):
            events.append((event_id, json.loads(line.removeprefix("data:"))))
            event_id = None
    return events


async def missed_five(server) -> tuple[dict, list[dict]]:
    """Disconnect a client for five ticks; return its last frame and what a
    client that stayed saw meanwhile."""
    async with ws_connect(server.ws_url) as clock:
        async with ws_connect(server.ws_url) as leaving:
            last = (await receive_words(leaving, 2))[-1]
        seen = await wait_for_seq(clock, last["seq"] + 5)
    return last, [frame for frame in seen if frame["seq"] > last["seq"]]
