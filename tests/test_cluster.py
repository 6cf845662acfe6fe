"""Several server processes and word workers sharing one redis-server."""

import asyncio
import signal
import time

import pytest

from .clients import EventStream, receive_words, ws_connect
from .conftest import TEST_WORD_INTERVAL

pytestmark = pytest.mark.slow


def assert_one_stream(frames: list[dict], seconds: float) -> None:
    """Consecutive seqs, and one word per tick over the time they span."""
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    span = (frames[-1]["ts"] - frames[0]["ts"]) / 1000
    assert span == pytest.approx((len(frames) - 1) * TEST_WORD_INTERVAL, abs=0.1)


async def test_two_servers_share_one_stream(start_server, redis_server):
    first = start_server("uvicorn", REDIS_URL=redis_server.url)
    second = start_server("uvicorn", REDIS_URL=redis_server.url)
    async with ws_connect(first.ws_url) as a, ws_connect(second.ws_url) as b:
        from_first, from_second = await asyncio.gather(
            receive_words(a, 10), receive_words(b, 10)
        )
    assert_one_stream(from_first, 10 * TEST_WORD_INTERVAL)
    assert_one_stream(from_second, 10 * TEST_WORD_INTERVAL)
    pairs_first = {(f["seq"], f["word"]) for f in from_first}
    pairs_second = {(f["seq"], f["word"]) for f in from_second}
    common_seqs = {s for s, _ in pairs_first} & {s for s, _ in pairs_second}
    assert len(common_seqs) >= 8
    assert {p for p in pairs_first if p[0] in common_seqs} == {
        p for p in pairs_second if p[0] in common_seqs
    }


async def test_sse_count_is_deployment_wide(start_server, redis_server):
    first = start_server("uvicorn", REDIS_URL=redis_server.url)
    second = start_server("daphne", REDIS_URL=redis_server.url)
    url_first = first.base_url + "/api/connections"
    url_second = second.base_url + "/api/connections"
    async with EventStream(url_first) as on_first, EventStream(url_second) as on_second:
        async with ws_connect(first.ws_url), ws_connect(second.ws_url):
            async with ws_connect(second.ws_url):
                await on_first.wait_for_count(3, timeout=2)
                await on_second.wait_for_count(3, timeout=2)
            await on_first.wait_for_count(2, timeout=2)
            await on_second.wait_for_count(2, timeout=2)
        await on_first.wait_for_count(0, timeout=2)
        await on_second.wait_for_count(0, timeout=2)


async def test_word_workers_and_in_process_source_give_one_stream(
    start_server, start_word_worker, redis_server
):
    server = start_server("uvicorn", REDIS_URL=redis_server.url)
    workers = [start_word_worker(REDIS_URL=redis_server.url) for _ in range(2)]
    async with ws_connect(server.ws_url) as ws:
        frames = await receive_words(ws, 20)
    assert_one_stream(frames, 20 * TEST_WORD_INTERVAL)
    assert all(worker.is_running() for worker in workers)


async def test_killed_worker_is_replaced(start_server, start_word_worker, redis_server):
    env = {"REDIS_URL": redis_server.url, "IN_PROCESS_WORD_SOURCE": "0"}
    server = start_server("uvicorn", **env)
    first = start_word_worker(**env)
    async with ws_connect(server.ws_url) as ws:
        await receive_words(ws, 3)
        second = start_word_worker(**env)
        # Let the second worker start and begin polling for the lock.
        await asyncio.sleep(2)
        first.stop(signal.SIGKILL)
        killed_at = time.time()
        frames = await receive_words(ws, 10)
        while frames[-1]["ts"] / 1000 < killed_at + 1:
            frames += await receive_words(ws, 1)
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    gaps = [b["ts"] - a["ts"] for a, b in zip(frames, frames[1:], strict=False)]
    assert max(gaps) <= 5000
    assert second.is_running()
    assert "took the lead" in second.log()


async def test_broadcast_words_requires_redis(start_word_worker):
    worker = start_word_worker()
    assert worker.popen.wait(30) != 0
    assert "broadcast_words needs REDIS_URL" in worker.log()
