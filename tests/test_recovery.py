"""Resuming after a reconnect, over WebSocket and SSE, with real servers."""

import httpx
import pytest

from .clients import (
    TIMEOUT,
    missed_five,
    read_json,
    receive_words,
    sse_events,
    wait_for_seq,
    ws_connect,
)
from .servers import RedisServer

pytestmark = pytest.mark.slow

# Long enough that a reconnect lands between two ticks with a wide margin.
RECOVERY_INTERVAL = "0.5"


@pytest.fixture
def recovering_server(start_server, redis_server):
    return start_server(
        "serve", REDIS_URL=redis_server.url, WORD_INTERVAL=RECOVERY_INTERVAL
    )


async def test_ws_resume_gets_exactly_the_missed_words(recovering_server):
    server = recovering_server
    last, missed = await missed_five(server)
    url = f"{server.ws_url}?since={last['seq']}&epoch={last['epoch']}"
    async with ws_connect(url) as ws:
        notice = await read_json(ws)
        recovered = [await read_json(ws) for _ in range(notice["words"])]
        live = [await read_json(ws) for _ in range(3)]
    assert notice == {
        "recovered": True,
        "words": 5,
        "since": last["seq"],
        "epoch": last["epoch"],
    }
    assert recovered == missed[:5]
    seqs = [frame["seq"] for frame in recovered + live]
    assert seqs == list(range(last["seq"] + 1, last["seq"] + 9))


async def test_sse_resume_with_last_event_id(recovering_server):
    server = recovering_server
    last, missed = await missed_five(server)
    headers = {"Last-Event-ID": f"{last['epoch']}:{last['seq']}"}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, read=None)) as client,
        client.stream(
            "GET", server.base_url + "/api/words", headers=headers
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        events = await sse_events(response, 8)
    ids = [event_id for event_id, _ in events]
    words = [data for _, data in events]
    assert words[:5] == missed[:5]
    seqs = [word["seq"] for word in words]
    assert seqs == list(range(last["seq"] + 1, last["seq"] + 9))
    assert ids == [f"{word['epoch']}:{word['seq']}" for word in words]


async def test_sse_without_resume_point_streams_live(recovering_server):
    server = recovering_server
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, read=None)) as client,
        client.stream("GET", server.base_url + "/api/words") as response,
    ):
        events = await sse_events(response, 2)
    (first_id, first), (_, second) = events
    assert second["seq"] == first["seq"] + 1
    assert first_id == f"{first['epoch']}:{first['seq']}"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("since={seq}&epoch=not-the-epoch", "epoch changed"),
        ("since=1&epoch={epoch}", "too old"),
        ("since=abc&epoch={epoch}", "invalid resume point"),
        # A superscript two: a digit to str.isdigit(), not to int().
        ("since=%C2%B2&epoch={epoch}", "invalid resume point"),
        ("since={seq}", "invalid resume point"),
        # A seq no word of this epoch has had yet.
        ("since={ahead}&epoch={epoch}", "invalid resume point"),
    ],
)
async def test_unrecoverable_resume_points(start_server, redis_server, query, reason):
    # One second of history at five words a second: seq 1 is soon too old.
    server = start_server(
        "serve",
        REDIS_URL=redis_server.url,
        WORD_INTERVAL="0.2",
        WORD_HISTORY_SECONDS="1",
    )
    async with ws_connect(server.ws_url) as ws:
        frames = await wait_for_seq(ws, 12)
    epoch = frames[-1]["epoch"]
    seq = frames[-1]["seq"]
    url = server.ws_url + "?" + query.format(seq=seq, ahead=seq + 1000, epoch=epoch)
    async with ws_connect(url) as ws:
        notice = await read_json(ws)
        live = await read_json(ws)
    assert notice["recovered"] is False
    assert notice["reason"] == reason
    assert live["seq"] > frames[-1]["seq"]
    assert live["epoch"] == epoch


async def test_redis_restart_changes_epoch(start_server, redis_server, tmp_path):
    server = start_server("serve", REDIS_URL=redis_server.url, WORD_INTERVAL="0.2")
    async with ws_connect(server.ws_url) as ws:
        before = (await receive_words(ws, 2))[-1]
    redis_server.stop()
    (tmp_path / "second").mkdir()
    restarted = RedisServer(tmp_path / "second", redis_server.port).start()
    try:
        async with ws_connect(server.ws_url) as clock:
            # Wait for the first word of the new history.
            fresh = await read_json(clock)
            while fresh["epoch"] == before["epoch"]:
                fresh = await read_json(clock)
        url = f"{server.ws_url}?since={before['seq']}&epoch={before['epoch']}"
        async with ws_connect(url) as ws:
            notice = await read_json(ws)
            after = await read_json(ws)
    finally:
        restarted.stop()
    assert notice["recovered"] is False
    assert notice["reason"] == "epoch changed"
    assert notice["epoch"] == fresh["epoch"] != before["epoch"]
    assert after["epoch"] == notice["epoch"]
    assert after["seq"] > before["seq"]


async def test_in_memory_history_resumes_under_runserver(start_server):
    server = start_server("runserver", WORD_INTERVAL=RECOVERY_INTERVAL)
    last, missed = await missed_five(server)
    url = f"{server.ws_url}?since={last['seq']}&epoch={last['epoch']}"
    async with ws_connect(url) as ws:
        notice = await read_json(ws)
        recovered = [await read_json(ws) for _ in range(notice["words"])]
    assert notice["recovered"] is True
    assert notice["words"] == 5
    assert recovered == missed[:5]
