"""Faults, bad input and load against real server processes and Redis."""

import asyncio
import json
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .clients import EventStream, metric_value, receive_words, wait_for_seq, ws_connect
from .database import fetch_rows
from .servers import PYTHON, ROOT, RedisServer, wait_until

pytestmark = pytest.mark.slow


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LookupError(f"no VmRSS for process {pid}")


def rows_by_agent(database_url: str, agent: str) -> list[tuple]:
    return fetch_rows(
        database_url,
        "SELECT state, close_code FROM streaming_connection WHERE user_agent = %s",
        (agent,),
    )


def reset_connection(ws) -> None:
    """Close the client's TCP connection with a reset, without a close frame."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


async def settled_count(events: EventStream, quiet: float = 1.0) -> int:
    """Read events until none comes for quiet seconds; return the last count.

    Changes within one report interval may cancel out, so the stream need
    not send a new event when the count ends where it started.
    """
    while True:
        try:
            await events.next_event(timeout=quiet)
        except TimeoutError:
            return events.events[-1]["active_connections"]


async def latest_count(events: EventStream, expected: int, timeout: float) -> float:
    """Wait until the stream reports expected; return the seconds it took."""
    started = time.monotonic()
    await events.wait_for_count(expected, timeout=timeout)
    return time.monotonic() - started


async def test_redis_restart(start_server, redis_server, tmp_path):
    server = start_server("serve", REDIS_URL=redis_server.url)
    (tmp_path / "second").mkdir()
    restarted = RedisServer(tmp_path / "second", redis_server.port)
    async with (
        EventStream(server.base_url + "/api/connections") as events,
        ws_connect(server.ws_url) as ws,
    ):
        await events.wait_for_count(1)
        before = (await receive_words(ws, 2))[-1]
        redis_server.stop()
        # A client that arrives while Redis is down cannot be reported yet.
        async with ws_connect(server.ws_url):
            wait_until(lambda: "channel layer failed" in server.log(), 5)
            restarted.start()
            back_at = time.monotonic()
            try:
                frame = await next_fresh_frame(ws, after_seq=before["seq"])
                resumed_after = time.monotonic() - back_at
                counted_after = await latest_count(events, 2, timeout=5)
            finally:
                restarted.stop()
    assert resumed_after < 5
    assert counted_after < 5
    assert frame["seq"] > before["seq"]
    assert server.is_running()


async def next_fresh_frame(ws, after_seq: int) -> dict:
    """Skip frames sent before now; return the first new one."""
    while True:
        frame = (await receive_words(ws, 1))[0]
        if frame["ts"] / 1000 > time.time() - 0.5 and frame["seq"] > after_seq:
            return frame


async def test_killed_server_drops_from_count(start_server, redis_server, database_url):
    survivor = start_server("serve", REDIS_URL=redis_server.url)
    victim = start_server("serve", REDIS_URL=redis_server.url)
    agent = f"lost-{uuid.uuid4()}"
    async with EventStream(survivor.base_url + "/api/connections") as events:
        clients = [
            await ws_connect(victim.ws_url, user_agent_header=agent).__aenter__()
            for _ in range(3)
        ]
        await events.wait_for_count(3)
        # Let the batch writer record the three open rows.
        wait_until(lambda: len(rows_by_agent(database_url, agent)) == 3, 5)
        victim.stop(signal.SIGKILL)
        dropped_after = await latest_count(events, 0, timeout=30)
    for client in clients:
        client.transport.abort()
    assert dropped_after < 30
    wait_until(
        lambda: rows_by_agent(database_url, agent) == [("lost", None)] * 3,
        10,
        message=f"rows not marked lost: {rows_by_agent(database_url, agent)}",
    )


async def test_graceful_shutdown(start_server, redis_server, database_url):
    watcher = start_server("serve", REDIS_URL=redis_server.url)
    stopping = start_server("serve", REDIS_URL=redis_server.url)
    agent = f"shutdown-{uuid.uuid4()}"
    async with (
        EventStream(watcher.base_url + "/api/connections") as on_watcher,
        EventStream(stopping.base_url + "/api/connections") as on_stopping,
        ws_connect(stopping.ws_url, user_agent_header=agent) as first,
        ws_connect(stopping.ws_url, user_agent_header=agent) as second,
    ):
        await on_watcher.wait_for_count(2)
        await on_stopping.wait_for_count(2)
        stopping.send_signal(signal.SIGTERM)
        for client in (first, second):
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(client.recv(), 10)
            assert client.close_code == 1001
        with pytest.raises(EOFError):
            await on_stopping.next_event(timeout=10)
        await on_watcher.wait_for_count(0, timeout=5)
    # uvicorn raises SIGTERM again once its graceful shutdown is done.
    assert stopping.popen.wait(15) == -signal.SIGTERM
    assert "streaming stopped" in stopping.log()
    assert "shutdown failed" not in stopping.log()
    assert rows_by_agent(database_url, agent) == [("closed", 1001)] * 2


async def test_churn_leaves_nothing_behind(start_server, redis_server):
    server = start_server("serve", REDIS_URL=redis_server.url)

    async def cycle(index: int) -> None:
        async with ws_connect(server.ws_url) as ws:
            if index % 3 == 0:
                reset_connection(ws)

    async def run_cycles(count: int, start: int) -> None:
        batch = 50
        for offset in range(start, start + count, batch):
            await asyncio.gather(*(cycle(i) for i in range(offset, offset + batch)))

    def no_clients_left() -> bool:
        return metric_value(server.base_url, "wordstream_fanout_subscribers") == 0

    async with EventStream(server.base_url + "/api/connections") as events:
        await events.next_event()
        await run_cycles(250, 0)  # warm up allocators and caches
        wait_until(no_clients_left, 10)
        assert await settled_count(events) == 0
        baseline = rss_kb(server.pid)
        await run_cycles(5000, 250)
        wait_until(no_clients_left, 10)
        assert await settled_count(events) == 0
    counts = [event["active_connections"] for event in events.events]
    assert min(counts) >= 0
    # The count did follow the churn, not only sit at 0.
    assert max(counts) > 0
    assert metric_value(server.base_url, "wordstream_active_connections") == 0
    final = rss_kb(server.pid)
    assert final <= baseline * 1.10, f"RSS grew from {baseline} KB to {final} KB"


async def test_slow_client_is_closed_and_others_unaffected(start_server, tmp_path):
    words = tmp_path / "long-words.txt"
    # Frames of 8 KB at 100 per second fill a socket that is not read quickly.
    words.write_text("\n".join(letter * 8000 for letter in "abcdefgh"))
    server = start_server(
        "serve", WORD_LIST=str(words), WORD_INTERVAL="0.01", WS_MAX_BACKLOG="20"
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    origin = server.base_url
    async with ws_connect(server.ws_url) as fast:
        slow = await ws_connect(
            server.ws_url, origin=origin, sock=sock, max_queue=1
        ).__aenter__()
        baseline = rss_kb(server.pid)
        frames = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            frames.append(json.loads(await asyncio.wait_for(fast.recv(), 5)))
        grown = rss_kb(server.pid) - baseline
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # The fast client kept up: no gap between its frames over 0.25 s.
    receive_gaps = [b["ts"] - a["ts"] for a, b in zip(frames, frames[1:], strict=False)]
    assert max(receive_gaps) < 250
    assert grown < 20_000, f"server RSS grew by {grown} KB"
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(slow.recv(), 10)
    assert slow.close_code == 1013
    assert "frames behind" in server.log()


HALF_OPEN_CLIENT = """
import asyncio, sys
from websockets.asyncio.client import connect

async def main():
    async with connect(sys.argv[1], origin=sys.argv[2]) as ws:
        print("connected", flush=True)
        async for _ in ws:
            pass

asyncio.run(main())
"""


async def test_half_open_client_is_removed(start_server):
    server = start_server("serve", WS_PING_INTERVAL="1", WS_PING_TIMEOUT="1")
    client = subprocess.Popen(
        [PYTHON, "-c", HALF_OPEN_CLIENT, server.ws_url, server.base_url],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert client.stdout.readline().strip() == b"connected"
        async with EventStream(server.base_url + "/api/connections") as events:
            await events.wait_for_count(1)
            client.send_signal(signal.SIGSTOP)
            removed_after = await latest_count(events, 0, timeout=60)
    finally:
        client.kill()
        client.wait()
    assert removed_after < 60


@pytest.fixture
def serve_with_watcher(start_server):
    """A production server and a client that must keep receiving every word."""
    return start_server("serve")


async def expect_close(ws, code: int) -> None:
    await expect_close_with(ws, (code,))


async def expect_close_with(ws, codes: tuple[int, ...]) -> None:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code in codes


async def test_bad_input_is_rejected(serve_with_watcher):
    await assert_bad_input_rejected(serve_with_watcher, serve_with_watcher)


async def assert_bad_input_rejected(target, producer) -> None:
    """Send every kind of bad input to target, which is producer itself or a
    proxy in front of it, while a watching client must keep its stream.
    """
    server = target
    async with ws_connect(server.ws_url) as watcher:
        first = (await receive_words(watcher, 1))[0]

        async with ws_connect(server.ws_url) as over_limit:
            await over_limit.send("x" * 5000)
            await expect_close(over_limit, 1009)

        async with ws_connect(server.ws_url) as huge:
            await huge.send("x" * 1_000_000)
            # The server closes before it has read the whole megabyte, and the
            # unread data may turn its close into a TCP reset (1006).
            await expect_close_with(huge, (1009, 1006))

        async with ws_connect(server.ws_url) as binary:
            await binary.send(b"\x00\xff" * 100)
            await binary.send("plain text")
            frames = await receive_words(binary, 2)
            assert all(set(frame) == {"word", "seq", "ts", "epoch"} for frame in frames)

        async with ws_connect(server.ws_url) as invalid:
            await invalid.send(b"\xc3\x28 invalid utf-8", text=True)
            await expect_close(invalid, 1007)
        # One line for the client, not uvicorn's traceback.
        assert "text message is not UTF-8" in producer.log()
        assert "Invalid UTF-8 sequence" not in producer.log()

        async with ws_connect(server.ws_url) as flood:
            for _ in range(10_000):
                await flood.send("spam")
                if flood.close_code is not None:
                    break
            await expect_close(flood, 1008)

        with pytest.raises(InvalidStatus) as foreign:
            await ws_connect(server.ws_url, origin="https://evil.example").__aenter__()
        assert foreign.value.response.status_code == 403
        assert "'https://evil.example'" in producer.log()

        with pytest.raises(InvalidStatus) as missing:
            await ws_connect(server.ws_url, origin=None).__aenter__()
        assert missing.value.response.status_code == 403

        with pytest.raises(InvalidStatus) as unknown:
            await ws_connect(server.ws_url + "x").__aenter__()
        assert unknown.value.response.status_code == 404

        with pytest.raises(InvalidStatus) as bad_host:
            # The URI names the host sent in Host; host= and port= name the socket.
            await ws_connect(
                f"ws://evil.example:{server.port}/ws",
                origin=server.base_url,
                host="127.0.0.1",
                port=server.port,
            ).__aenter__()
        assert bad_host.value.response.status_code == 400

        async with httpx.AsyncClient(base_url=server.base_url) as http:
            assert (await http.post("/api/connections")).status_code == 405
            assert (await http.get("/nowhere")).status_code == 404
            # Django responds for its own paths, and a proxy serves the page's files.
            response = await http.get("/admin/login/", headers={"Host": "evil.example"})
            assert response.status_code == 400

        async with ws_connect(server.ws_url) as latecomer:
            now = (await receive_words(latecomer, 1))[0]
        later = await wait_for_seq(watcher, now["seq"])
    seqs = [first["seq"]] + [frame["seq"] for frame in later]
    assert seqs == list(range(first["seq"], now["seq"] + 1))


def test_serve_refuses_debug_and_development_key(server_env):
    base = {**server_env, "PORT": "9", "HOST": "127.0.0.1"}
    cases = {
        "DEBUG is on": {"DJANGO_DEBUG": "1"},
        "public development key": {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": ""},
    }
    for message, env in cases.items():
        result = subprocess.run(
            [PYTHON, "-m", "wordstream_site.serve"],
            env={**base, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert message in result.stderr


def test_check_deploy_passes(server_env):
    env = {
        **server_env,
        "DJANGO_DEBUG": "0",
        "DJANGO_HTTPS": "1",
        "DJANGO_HSTS_INCLUDE_SUBDOMAINS": "1",
        "DJANGO_HSTS_PRELOAD": "1",
        "DJANGO_SECRET_KEY": "k" + uuid.uuid4().hex + uuid.uuid4().hex,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


BURST_CLIENTS = """
import asyncio, sys
from websockets.asyncio.client import connect

async def main(url, origin, count):
    clients = await asyncio.gather(
        *(connect(url, origin=origin, open_timeout=30) for _ in range(count))
    )
    print(len(clients), flush=True)
    await asyncio.gather(*(client.close() for client in clients))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_connect_burst_does_not_delay_words(start_server, redis_server):
    server = start_server("serve", REDIS_URL=redis_server.url, WORD_INTERVAL="1.0")
    async with ws_connect(server.ws_url) as watcher:
        await receive_words(watcher, 1)
        # The burst comes from another process, so that this one only reads.
        burst = await asyncio.create_subprocess_exec(
            PYTHON,
            "-c",
            BURST_CLIENTS,
            server.ws_url,
            server.base_url,
            "1000",
            stdout=subprocess.PIPE,
        )
        arrivals = []
        while burst.returncode is None:
            frame = json.loads(await asyncio.wait_for(watcher.recv(), 5))
            arrivals.append((time.time(), frame))
            if burst.stdout.at_eof():
                await burst.wait()
        output = (await burst.stdout.read()).decode()
    assert burst.returncode == 0
    assert "1000" in output
    seqs = [frame["seq"] for _, frame in arrivals]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # The handshakes share the event loop with the fan-out, so a tick may wait
    # behind some of them (up to 0.1 s in four runs on 2 idle cores), but
    # never for a database write: rows are batched.
    delays = [arrived - frame["ts"] / 1000 for arrived, frame in arrivals]
    assert max(delays) < 0.5, f"delays {delays}"
