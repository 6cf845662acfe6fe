"""One real server process with a real redis-server."""

import asyncio
import contextlib
import os
import signal
import statistics
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from .clients import EventStream, metric_value, receive_words, ws_connect
from .conftest import TEST_WORD_INTERVAL
from .servers import wait_until

pytestmark = pytest.mark.slow

# serve is the production server (wordstream_site.serve, with its own
# protocol classes); uvicorn is stock uvicorn on the same ASGI application.
SERVER_KINDS = ["daphne", "uvicorn", "serve"]


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_words_arrive_at_the_interval(start_server, redis_server, kind):
    server = start_server(kind, REDIS_URL=redis_server.url)
    async with ws_connect(server.ws_url) as first, ws_connect(server.ws_url) as second:
        frames = await receive_words(first, 11)
        others = await receive_words(second, 11)
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + 11))
    gaps = [
        (b["ts"] - a["ts"]) / 1000 for a, b in zip(frames, frames[1:], strict=False)
    ]
    assert statistics.mean(gaps) == pytest.approx(TEST_WORD_INTERVAL, abs=0.02)
    words = {frame["seq"]: frame["word"] for frame in frames}
    shared = [frame for frame in others if frame["seq"] in words]
    assert len(shared) >= 9
    assert all(words[frame["seq"]] == frame["word"] for frame in shared)


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_sse_counts_follow_clients(start_server, redis_server, kind):
    server = start_server(kind, REDIS_URL=redis_server.url)
    async with EventStream(server.base_url + "/api/connections") as events:
        assert events.response.headers["content-type"].startswith("text/event-stream")
        assert events.response.headers["cache-control"] == "no-cache"
        assert events.response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in events.response.headers
        assert (await events.next_event()) == {"active_connections": 0}
        async with ws_connect(server.ws_url):
            await events.wait_for_count(1, timeout=2)
            async with ws_connect(server.ws_url):
                await events.wait_for_count(2, timeout=2)
            await events.wait_for_count(1, timeout=2)
        await events.wait_for_count(0, timeout=2)
    counts = [event["active_connections"] for event in events.events]
    assert counts == [0, 1, 2, 1, 0]


async def test_page_and_assets_are_served(start_server):
    server = start_server("uvicorn")
    shared = Path(__file__).resolve().parent.parent / "shared"
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for path, name in [("/", "index.html"), ("/app.js", "app.js")]:
            response = await client.get(path)
            assert response.status_code == 200
            assert response.content == (shared / name).read_bytes()
            assert "default-src 'self'" in response.headers["content-security-policy"]
        css = await client.get("/style.css")
        assert css.headers["content-type"].startswith("text/css")
        assert (await client.get("/missing.js")).status_code == 404
        assert (await client.get("/..%2Fmanage.py")).status_code == 404
        assert (await client.post("/api/connections")).status_code == 405


async def test_word_list_file_is_used(start_server, tmp_path):
    word_list = tmp_path / "words.txt"
    word_list.write_text("zephyr\nquokka\n", encoding="utf-8")
    server = start_server("uvicorn", WORD_LIST=str(word_list))
    async with ws_connect(server.ws_url) as ws:
        frames = await receive_words(ws, 8)
    assert {frame["word"] for frame in frames} <= {"zephyr", "quokka"}


async def test_profane_words_never_streamed(start_server, tmp_path):
    from streaming.words import PROFANITIES

    word_list = tmp_path / "words.txt"
    profane = sorted(PROFANITIES)[:300]
    word_list.write_text("\n".join([*profane, "meadow"]), encoding="utf-8")
    server = start_server("uvicorn", WORD_LIST=str(word_list))
    async with ws_connect(server.ws_url) as ws:
        frames = await receive_words(ws, 10)
    assert {frame["word"] for frame in frames} == {"meadow"}


async def test_sse_subscription_released_on_disconnect(start_server, redis_server):
    server = start_server("uvicorn", REDIS_URL=redis_server.url)
    streams = [EventStream(server.base_url + "/api/connections") for _ in range(3)]
    for stream in streams:
        await stream.__aenter__()
        assert await stream.next_event() == {"active_connections": 0}
    assert metric_value(server.base_url, "wordstream_sse_clients") == 3
    for stream in streams:
        await stream.__aexit__(None, None, None)
    await wait_for_metric(server.base_url, "wordstream_sse_clients", 0, timeout=1)


async def wait_for_metric(base_url, name, expected, timeout):
    async def reached():
        while metric_value(base_url, name) != expected:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(reached(), timeout)


def child_pids(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children}


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_server_processes_share_stream_and_restart(start_server, redis_server):
    server = start_server("serve", REDIS_URL=redis_server.url, WEB_CONCURRENCY="2")
    workers = wait_until(
        lambda: len(child_pids(server.pid)) == 2 and child_pids(server.pid), 10
    )
    assert "started 2 server processes" in server.log()

    # A worker killed by a signal is replaced, and the port keeps serving.
    killed = min(workers)
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: killed not in child_pids(server.pid), 10)
    workers = wait_until(
        lambda: len(child_pids(server.pid)) == 2 and child_pids(server.pid), 10
    )
    assert killed not in workers
    assert f"server process {killed} exited with -9; starting another" in server.log()

    clients = [ws_connect(server.ws_url) for _ in range(10)]
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(client) for client in clients]
        frames = await asyncio.gather(*(receive_words(ws, 3) for ws in sockets))
        # One stream: whichever process serves a client, a seq carries one word.
        words_by_seq: dict[int, set[str]] = {}
        for frame in (frame for client_frames in frames for frame in client_frames):
            words_by_seq.setdefault(frame["seq"], set()).add(frame["word"])
        assert all(len(words) == 1 for words in words_by_seq.values())
        # The count is the deployment's, whichever process serves the stream.
        async with EventStream(server.base_url + "/api/connections") as events:
            await events.wait_for_count(10, timeout=5)

        # SIGTERM reaches every worker, which close their clients with 1001.
        server.send_signal(signal.SIGTERM)
        for ws in sockets:
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1001
    assert server.popen.wait(15) == 0
    assert not any(is_alive(pid) for pid in workers)
    assert "server processes stopped" in server.log()


async def test_sigint_stops_server_without_traceback(start_server):
    # Ctrl-C in a terminal sends SIGINT.
    server = start_server("serve")
    async with ws_connect(server.ws_url) as ws:
        await receive_words(ws, 1)
        server.send_signal(signal.SIGINT)
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1001
    assert server.popen.wait(15) == -signal.SIGINT
    assert "Traceback" not in server.log()
