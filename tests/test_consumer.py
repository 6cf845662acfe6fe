import asyncio
import json
import logging

import channels.consumer
import channels.generic.websocket
import pytest
from channels.testing import WebsocketCommunicator
from uvicorn.protocols.utils import ClientDisconnected

from streaming.closecodes import CloseCode
from streaming.fanout import Outgoing
from streaming.history import Word
from streaming.models import Connection, ConnectionState, Via
from wordstream_site.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]

# Seconds for any single wait.
TIMEOUT = 3


def communicator(origin: bytes | None = b"http://127.0.0.1:8000", headers=()):
    all_headers = [(b"host", b"127.0.0.1:8000"), *headers]
    if origin is not None:
        all_headers.append((b"origin", origin))
    client = WebsocketCommunicator(application, "/ws", headers=all_headers)
    # The application task has not run yet, so it sees this peer address.
    client.scope["client"] = ["127.0.0.1", 50000]
    return client


async def receive_word(client):
    return json.loads(await client.receive_from(timeout=TIMEOUT))


async def test_client_receives_consecutive_words(services):
    client = communicator()
    connected, _ = await client.connect(timeout=TIMEOUT)
    assert connected
    frames = [await receive_word(client) for _ in range(4)]
    assert [sorted(frame) for frame in frames] == [["epoch", "seq", "ts", "word"]] * 4
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert all(isinstance(frame["word"], str) and frame["word"] for frame in frames)
    await client.disconnect()


async def test_clients_get_the_same_word_per_seq(services):
    clients = [communicator() for _ in range(3)]
    for client in clients:
        assert (await client.connect(timeout=TIMEOUT))[0]
    streams = []
    for client in clients:
        frames = [await receive_word(client) for _ in range(4)]
        streams.append({frame["seq"]: frame["word"] for frame in frames})
    common = set(streams[0]) & set(streams[1]) & set(streams[2])
    assert len(common) >= 3
    for seq in common:
        assert streams[0][seq] == streams[1][seq] == streams[2][seq]
    for client in clients:
        await client.disconnect()


async def test_client_messages_are_ignored(services):
    client = communicator()
    assert (await client.connect(timeout=TIMEOUT))[0]
    await client.send_to(text_data="hello")
    await client.send_to(bytes_data=b"\x00\x01binary")
    await client.send_to(text_data=json.dumps({"word": "forged", "seq": 0}))
    frames = [await receive_word(client) for _ in range(3)]
    assert all(frame["word"] != "forged" for frame in frames)
    assert all(set(frame) == {"word", "seq", "ts", "epoch"} for frame in frames)
    assert len(services.fanout) == 1
    await client.disconnect()


async def test_disconnect_leaves_fanout_and_presence(services):
    clients = [communicator() for _ in range(2)]
    for client in clients:
        assert (await client.connect(timeout=TIMEOUT))[0]
    assert len(services.fanout) == 2
    assert services.presence.local_count == 2
    for client in clients:
        await client.disconnect()
    assert len(services.fanout) == 0
    assert services.presence.local_count == 0


async def test_connect_and_disconnect_skip_database_thread(services, monkeypatch):
    cleanups = []

    async def count_cleanup():
        cleanups.append(1)

    # The names that channels' dispatch() and websocket_disconnect() call to
    # close stale database connections in the database thread.
    monkeypatch.setattr(channels.consumer, "aclose_old_connections", count_cleanup)
    monkeypatch.setattr(
        channels.generic.websocket, "aclose_old_connections", count_cleanup
    )
    client = communicator()
    assert (await client.connect(timeout=TIMEOUT))[0]
    assert len(services.fanout) == 1
    await client.disconnect()
    assert cleanups == []
    assert len(services.fanout) == 0
    assert services.presence.local_count == 0


async def test_close_clients_survives_gone_client(services, caplog):
    caplog.set_level(logging.DEBUG, logger="streaming.consumers")
    departed, remaining = communicator(), communicator()
    assert (await departed.connect(timeout=TIMEOUT))[0]
    [departed_consumer] = services.fanout
    assert (await remaining.connect(timeout=TIMEOUT))[0]

    async def send_to_closed_socket(message):
        raise ClientDisconnected()

    # uvicorn's send() raises ClientDisconnected like this for a socket that
    # closed before the consumer handled its websocket.disconnect event. No
    # await separates this from close_clients(), so no word goes out between.
    departed_consumer.base_send = send_to_closed_socket
    await services.close_clients(CloseCode.GOING_AWAY)
    assert len(services.fanout) == 0
    assert f"closing {departed_consumer.connection_id}" in caplog.text

    # Words sent before the close may come first.
    output = await remaining.receive_output(timeout=TIMEOUT)
    while output["type"] == "websocket.send":
        output = await remaining.receive_output(timeout=TIMEOUT)
    assert output["type"] == "websocket.close"
    assert output["code"] == CloseCode.GOING_AWAY

    # The disconnect event that follows still takes the client out of presence.
    await departed.disconnect()
    await remaining.disconnect()
    assert services.presence.local_count == 0


async def test_queued_frames_to_gone_client_are_dropped(services):
    client = communicator()
    assert (await client.connect(timeout=TIMEOUT))[0]
    [consumer] = services.fanout
    services.fanout.discard(consumer)
    unblock = asyncio.get_running_loop().create_future()
    sends = []

    async def send_until_gone(message):
        sends.append(message)
        if len(sends) == 1:
            await unblock
        else:
            raise ClientDisconnected()

    consumer.base_send = send_until_gone
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    try:
        seq = consumer._last_word.seq if consumer._last_word else 0
        words = [Word("late", seq + step, 0, "e1") for step in (1, 2, 3)]
        # The first send waits for the socket, so the next two are queued.
        assert all(consumer.offer(Outgoing.of(word)) for word in words)
        unblock.set_result(None)
        async with asyncio.timeout(TIMEOUT):
            while len(sends) < 2 or consumer._pending_send is not None:
                await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)

    # The second send found the socket gone, and the third was dropped.
    assert len(sends) == 2
    assert consumer._backlog is None
    assert errors == []
    await client.disconnect()


async def test_failed_connect_leaves_fanout_and_presence(services, monkeypatch):
    async def failing_read(seq):
        raise RuntimeError("history read failed")

    monkeypatch.setattr(services.history, "since", failing_read)
    client = WebsocketCommunicator(
        application,
        "/ws?since=1&epoch=e1",
        headers=[(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000")],
    )
    client.scope["client"] = ["127.0.0.1", 50000]
    # Accepted, then the recovery in connect() raises.
    assert (await client.connect(timeout=TIMEOUT))[0]
    with pytest.raises(RuntimeError, match="history read failed"):
        await client.wait(timeout=TIMEOUT)
    assert len(services.fanout) == 0
    assert services.presence.local_count == 0
    await services.recorder.flush()
    row = await Connection.objects.aget()
    assert row.state == ConnectionState.CLOSED
    assert row.close_code == 1006


async def test_foreign_origin_is_rejected_and_logged(services, caplog):
    caplog.set_level(logging.WARNING, logger="streaming.handshake")
    client = communicator(origin=b"https://evil.example")
    connected, _ = await client.connect(timeout=TIMEOUT)
    assert not connected
    assert "https://evil.example" in caplog.text
    assert "rejected WebSocket handshake" in caplog.text
    assert len(services.fanout) == 0


async def test_missing_origin_is_rejected(services):
    connected, _ = await communicator(origin=None).connect(timeout=TIMEOUT)
    assert not connected


async def test_missing_origin_allowed_when_configured(services, settings):
    settings.WS_ALLOW_MISSING_ORIGIN = True
    client = communicator(origin=None)
    connected, _ = await client.connect(timeout=TIMEOUT)
    assert connected
    await client.disconnect()


async def test_trusted_origin_behind_proxy_is_accepted(services, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://words.example.org"]
    client = communicator(origin=b"https://words.example.org")
    connected, _ = await client.connect(timeout=TIMEOUT)
    assert connected
    await client.disconnect()


async def test_connection_row_is_recorded(services):
    headers = [
        (b"user-agent", b"pytest-agent/1.0"),
        (b"x-wordstream-via", b"nginx"),
        (b"x-forwarded-for", b"203.0.113.9"),
    ]
    client = communicator(headers=headers)
    assert (await client.connect(timeout=TIMEOUT))[0]
    words = [await receive_word(client) for _ in range(3)]
    assert len(words) == 3
    await client.disconnect(code=4000)
    await services.recorder.flush()
    row = await Connection.objects.aget()
    assert row.state == ConnectionState.CLOSED
    assert row.user_agent == "pytest-agent/1.0"
    # The communicator's peer is 127.0.0.1, a trusted proxy by default.
    assert row.via == Via.NGINX
    assert row.client_address == "203.0.113.9"
    assert row.close_code == 4000
    assert row.words_delivered >= 3
    assert row.duration == row.closed_at - row.opened_at
    assert row.process == services.process_id


async def test_untrusted_peer_headers_are_ignored(services, settings):
    settings.TRUSTED_PROXIES = ["10.9.9.9"]
    headers = [(b"x-wordstream-via", b"node"), (b"x-forwarded-for", b"203.0.113.9")]
    client = communicator(headers=headers)
    assert (await client.connect(timeout=TIMEOUT))[0]
    await client.disconnect()
    await services.recorder.flush()
    row = await Connection.objects.aget()
    assert row.via == Via.DIRECT
    assert row.client_address == "127.0.0.1"


async def test_no_word_is_sent_before_connect_completes(services):
    client = communicator()
    assert (await client.connect(timeout=TIMEOUT))[0]
    assert await client.receive_nothing(timeout=0.01)
    await client.disconnect()
    await asyncio.sleep(0)
