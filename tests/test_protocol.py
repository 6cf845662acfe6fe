"""The AsyncAPI document is valid and matches what a running server sends."""

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import yaml
from jsonschema import Draft7Validator

from .clients import TIMEOUT, EventStream, receive_words, ws_connect

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
SPEC_SCHEMA = (
    ROOT / "tests/schemas/node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"
)


@pytest.fixture(scope="module")
def document():
    return yaml.safe_load(DOCUMENT.read_text())


def payload_validator(document, name):
    """Return a validator of one components/schemas entry, refs resolved."""
    schema = {
        "$ref": f"#/components/schemas/{name}",
        "components": document["components"],
    }
    return Draft7Validator(schema)


def test_document_follows_asyncapi_3(document):
    spec = json.loads(SPEC_SCHEMA.read_text())
    errors = sorted(Draft7Validator(spec).iter_errors(document), key=str)
    assert [error.message for error in errors] == []
    assert document["asyncapi"] == "3.0.0"


def test_document_describes_every_endpoint(document):
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {"/ws", "/api/words", "/api/connections"}


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("word", {"word": "two words", "seq": 1, "ts": 1, "epoch": "e"}),
        ("word", {"word": "harbour", "seq": 1, "ts": 1}),
        ("word", {"word": "harbour", "seq": 0, "ts": 1, "epoch": "e"}),
        ("connectionCount", {"active_connections": -1}),
        ("recoveryNotice", {"recovered": False, "reason": "other", "epoch": ""}),
        ("recoveryNotice", {"recovered": True, "words": 2, "epoch": "e"}),
    ],
)
def test_schemas_reject_invalid_payloads(document, name, payload):
    assert not payload_validator(document, name).is_valid(payload)


def test_schemas_accept_valid_payloads(document):
    word = {"word": "harbour", "seq": 1, "ts": 1, "epoch": "e"}
    assert payload_validator(document, "word").is_valid(word)


async def read_json(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def test_real_frames_match_the_document(document, start_server, redis_server):
    server = start_server("serve", REDIS_URL=redis_server.url)
    words = payload_validator(document, "word")
    notices = payload_validator(document, "recoveryNotice")
    counts = payload_validator(document, "connectionCount")

    async with ws_connect(server.ws_url) as ws:
        frames = await receive_words(ws, 3)
    last = frames[-1]
    resume = f"{server.ws_url}?since={last['seq']}&epoch={last['epoch']}"
    async with ws_connect(resume) as ws:
        recovered_notice = await read_json(ws)
    async with ws_connect(server.ws_url + "?since=1&epoch=wrong") as ws:
        failed_notice = await read_json(ws)
        frames.append(await read_json(ws))

    async with EventStream(server.base_url + "/api/connections") as events:
        count_events = [await events.next_event()]
        async with ws_connect(server.ws_url):
            count_events.append(await events.next_event())

    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, read=None)) as client,
        client.stream("GET", server.base_url + "/api/words") as response,
    ):
        lines = response.aiter_lines()
        while not (line := await asyncio.wait_for(anext(lines), TIMEOUT)).startswith(
            "data:"
        ):
            pass
        frames.append(json.loads(line.removeprefix("data:")))

    for frame in frames:
        words.validate(frame)
    notices.validate(recovered_notice)
    notices.validate(failed_notice)
    assert recovered_notice["recovered"] is True
    assert failed_notice["recovered"] is False
    for event in count_events:
        counts.validate(event)
    assert [event["active_connections"] for event in count_events] == [0, 1]
