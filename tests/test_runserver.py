"""`manage.py runserver` with no REDIS_URL: everything in one process."""

import asyncio
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from .clients import EventStream, receive_words, ws_connect
from .conftest import TEST_WORD_INTERVAL

pytestmark = pytest.mark.slow


async def test_runserver_serves_page_stream_and_counts(start_server):
    server = start_server("runserver")
    index = Path(__file__).resolve().parent.parent / "shared" / "index.html"
    response = httpx.get(server.base_url + "/")
    assert response.status_code == 200
    assert response.content == index.read_bytes()

    async with EventStream(server.base_url + "/api/connections") as events:
        assert await events.next_event() == {"active_connections": 0}
        async with ws_connect(server.ws_url) as ws:
            await events.wait_for_count(1, timeout=2)
            frames = await receive_words(ws, 10)
        await events.wait_for_count(0, timeout=2)

    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + 10))
    span = (frames[-1]["ts"] - frames[0]["ts"]) / 1000
    assert span == pytest.approx(9 * TEST_WORD_INTERVAL, abs=0.1)
    log = server.log()
    assert log.count("took the lead") == 1
    assert log.count("streaming started") == 1


async def test_runserver_starts_word_source_without_a_request(start_server):
    server = start_server("runserver")
    log = server.log()
    assert "InMemoryChannelLayer" in log
    # The services started before the first request reached the server.
    assert log.index("streaming started") < log.index("GET /healthz")


async def test_runserver_closes_flooding_client_normally(start_server):
    # daphne sends no 1008 from a server, so the consumer closes with 1000.
    server = start_server("runserver")
    async with ws_connect(server.ws_url) as flood:
        for _ in range(200):
            await flood.send("spam")
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(flood.recv(), 5)
    assert flood.close_code == 1000
    assert "Exception inside application" not in server.log()
