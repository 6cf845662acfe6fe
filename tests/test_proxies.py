"""Both consumers, nginx and node, in front of a real producer and Redis, or
of three producer replicas behind one name.

The producer runs the Docker image's command (`python -m wordstream_site.serve`
with DJANGO_DEBUG=0), nginx runs docker/nginx's template rendered as the image
renders it, node runs docker/node/server.js, and their static root is filled
by the script the shared_init container runs.
"""

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.frames import Frame, Opcode

from .clients import (
    TIMEOUT,
    EventStream,
    SansIOWebSocket,
    metric_value,
    missed_five,
    receive_words,
    sse_events,
    wait_for_seq,
    ws_connect,
)
from .database import fetch_rows
from .dns import DnsServer
from .proxies import NginxProcess, NodeProcess, ProxyProcess, sync_shared
from .servers import (
    PYTHON,
    ROOT,
    STOP_TIMEOUT,
    ServerProcess,
    free_port,
    wait_until,
)
from .test_faults import assert_bad_input_rejected

pytestmark = pytest.mark.slow

KINDS = ["nginx", "node"]
SHARED = ROOT / "shared"
CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"
# Seconds within which the count reported over SSE follows a connect or a
# disconnect, and within which the producer sees an event stream close.
COUNT_DELAY = 1.0
UPSTREAM_CLOSE_DELAY = 2.0
# The recorder writes connection rows in batches every 0.5 s.
ROW_DELAY = 5.0
# Seconds node waits after SIGTERM before it destroys what is still open
# (config.shutdownTimeout in server.js).
NODE_SHUTDOWN_TIMEOUT = 10.0
# The close code and reason node sends for each WebSocket client on SIGTERM.
GOING_AWAY = 1001
GOING_AWAY_REASON = "proxy shutting down"


@dataclass
class Stack:
    producer: ServerProcess
    nginx: NginxProcess
    node: NodeProcess

    def proxy(self, kind: str) -> ProxyProcess:
        return {"nginx": self.nginx, "node": self.node}[kind]


@pytest.fixture(scope="session")
def collected_static():
    """The admin's assets, collected into STATIC_ROOT as the image does."""
    subprocess.run(
        [PYTHON, "manage.py", "collectstatic", "--no-input", "-v0"],
        cwd=ROOT,
        check=True,
    )
    return ROOT / "staticfiles"


def test_server_serves_collected_static_under_debug(start_server, collected_static):
    # A development run of the production server: DEBUG on, no runserver.
    server = start_server("serve", DJANGO_DEBUG="1", DJANGO_DEVELOPMENT="1")
    response = httpx.get(server.base_url + "/static/admin/css/base.css")
    assert response.status_code == 200
    assert response.content == (collected_static / "admin/css/base.css").read_bytes()


@pytest.fixture
def static_root(tmp_path):
    root = tmp_path / "shared_web"
    sync_shared(root)
    return root


@pytest.fixture
def start_producer(start_server, redis_server, collected_static):
    """Start producers configured as in the image, on a given or a free port
    of host, with env added to their environment."""

    def start(
        port: int | None = None, host: str = "127.0.0.1", **env: str
    ) -> ServerProcess:
        image_env = {
            "DJANGO_SECRET_KEY": "test-" + uuid.uuid4().hex,
            "REDIS_URL": redis_server.url,
        }
        return start_server("serve", port=port, host=host, **{**image_env, **env})

    return start


@pytest.fixture
def start_proxy(tmp_path, static_root):
    started: list[ProxyProcess] = []

    def start(kind: str, producer_port: int, **options: str) -> ProxyProcess:
        """Start a proxy. options go to NginxProcess or NodeProcess, such as
        producer_host and resolver."""
        kinds = {"nginx": NginxProcess, "node": NodeProcess}
        process = kinds[kind](tmp_path, static_root, producer_port, **options)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def stack(start_producer, start_proxy):
    producer = start_producer()
    return Stack(
        producer,
        start_proxy("nginx", producer.port),
        start_proxy("node", producer.port),
    )


def sse_clients(producer: ServerProcess) -> float:
    return metric_value(producer.base_url, "wordstream_sse_clients")


@pytest.mark.parametrize("kind", KINDS)
async def test_first_request_websocket_gets_words(stack, kind):
    # No HTTP request has reached the proxy before this handshake.
    async with ws_connect(stack.proxy(kind).ws_url) as ws:
        frames = await receive_words(ws, 3)
    assert [set(frame) for frame in frames] == [{"word", "seq", "ts", "epoch"}] * 3
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + 3))


@pytest.mark.parametrize("kind", KINDS)
async def test_page_files_are_served_exactly(stack, kind):
    async with httpx.AsyncClient(base_url=stack.proxy(kind).base_url) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.content == (SHARED / "index.html").read_bytes()
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        files = sorted(path for path in SHARED.rglob("*") if path.is_file())
        assert files
        for path in files:
            name = path.relative_to(SHARED).as_posix()
            response = await client.get("/" + name)
            assert response.status_code == 200, name
            assert response.content == path.read_bytes(), name


async def test_sse_counts_clients_of_both_proxies(stack):
    nginx_events = EventStream(stack.nginx.base_url + "/api/connections")
    node_events = EventStream(stack.node.base_url + "/api/connections")

    async def both_report(count: int) -> None:
        await asyncio.gather(
            nginx_events.wait_for_count(count, timeout=COUNT_DELAY),
            node_events.wait_for_count(count, timeout=COUNT_DELAY),
        )

    async with nginx_events, node_events:
        for events in (nginx_events, node_events):
            headers = events.response.headers
            assert headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in headers
            assert (await events.next_event()) == {"active_connections": 0}
        async with ws_connect(stack.nginx.ws_url):
            await both_report(1)
            async with ws_connect(stack.node.ws_url):
                await both_report(2)
            await both_report(1)
        await both_report(0)
    for events in (nginx_events, node_events):
        counts = [event["active_connections"] for event in events.events]
        assert counts == [0, 1, 2, 1, 0]


@pytest.mark.parametrize("kind", KINDS)
async def test_sse_upstream_closed_when_client_leaves(stack, kind):
    async with EventStream(stack.proxy(kind).base_url + "/api/connections") as events:
        assert (await events.next_event()) == {"active_connections": 0}
        wait_until(lambda: sse_clients(stack.producer) == 1, UPSTREAM_CLOSE_DELAY)
    wait_until(
        lambda: sse_clients(stack.producer) == 0,
        UPSTREAM_CLOSE_DELAY,
        message=f"the producer still streams to {kind} after the client left",
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_admin_login_loads_with_its_css(stack, kind, collected_static):
    async with httpx.AsyncClient(base_url=stack.proxy(kind).base_url) as client:
        redirect = await client.get("/admin")
        assert redirect.status_code == 301
        assert redirect.headers["location"] == "/admin/"
        page = await client.get("/admin/login/")
        assert page.status_code == 200
        stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page.text)
        assert "/static/admin/css/base.css" in stylesheets
        assert "/static/admin/css/login.css" in stylesheets
        for href in stylesheets:
            css = await client.get(href)
            assert css.status_code == 200, href
            assert css.headers["content-type"].startswith("text/css"), href
            collected = collected_static / href.removeprefix("/static/")
            assert css.content == collected.read_bytes(), href


@pytest.mark.parametrize("kind", KINDS)
async def test_admin_login_form_passes_csrf(stack, kind):
    """The proxies pass the browser's Host on, so Django's Origin check of the
    form accepts a page served by the proxy."""
    base_url = stack.proxy(kind).base_url
    async with httpx.AsyncClient(base_url=base_url) as client:
        page = await client.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        response = await client.post(
            "/admin/login/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": "nobody",
                "password": "wrong",
            },
            headers={"Origin": base_url, "Referer": base_url + "/admin/login/"},
        )
    assert response.status_code == 200
    assert "Please enter the correct username and password" in response.text


@pytest.mark.parametrize("kind", KINDS)
async def test_unlisted_paths_are_not_proxied(stack, kind):
    proxy = stack.proxy(kind)
    paths = ["/wsx", "/ws/", "/api/connectionsx", "/adminx", "/healthz", "/metrics"]
    async with httpx.AsyncClient(base_url=proxy.base_url) as client:
        for path in paths:
            assert (await client.get(path)).status_code == 404, path
    with pytest.raises(InvalidStatus) as rejected:
        async with ws_connect(proxy.ws_url + "x"):
            pass
    assert rejected.value.response.status_code == 404


@pytest.mark.parametrize("kind", KINDS)
async def test_page_served_while_producer_is_down(start_producer, start_proxy, kind):
    producer_port = free_port()
    proxy = start_proxy(kind, producer_port)
    async with httpx.AsyncClient(base_url=proxy.base_url) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.content == (SHARED / "index.html").read_bytes()
        for path in ["/api/connections", "/admin/login/", "/static/admin/css/base.css"]:
            assert (await client.get(path)).status_code == 502, path
    with pytest.raises(InvalidStatus) as rejected:
        async with ws_connect(proxy.ws_url):
            pass
    assert rejected.value.response.status_code == 502

    # The same proxy, not restarted, reaches the producer once it runs.
    start_producer(port=producer_port)
    async with EventStream(proxy.base_url + "/api/connections") as events:
        assert (await events.next_event()) == {"active_connections": 0}


async def test_nginx_looks_up_producer_per_request(
    start_producer, tmp_path, static_root
):
    with DnsServer("producer.test") as dns:
        producer_port = free_port()
        nginx = NginxProcess(
            tmp_path,
            static_root,
            producer_port,
            producer_host="producer.test",
            resolver=f"127.0.0.1:{dns.port}",
        )
        nginx.start()
        try:
            async with httpx.AsyncClient(base_url=nginx.base_url) as client:
                assert (await client.get("/")).status_code == 200
                # Started and served the page without looking the name up.
                assert dns.queries == []
                assert (await client.get("/api/connections")).status_code == 502
                assert dns.queries == ["producer.test"]
            start_producer(port=producer_port)
            async with EventStream(nginx.base_url + "/api/connections") as events:
                assert (await events.next_event()) == {"active_connections": 0}
        finally:
            nginx.stop()


async def test_admin_rows_record_the_path(stack, database_url):
    run = uuid.uuid4().hex[:8]
    forged = {"X-Forwarded-For": "203.0.113.7", "X-Wordstream-Via": "direct"}
    connections = [
        ("direct", stack.producer.ws_url, {}),
        ("nginx", stack.nginx.ws_url, {}),
        ("node", stack.node.ws_url, {}),
        ("nginx-forged", stack.nginx.ws_url, forged),
        ("node-forged", stack.node.ws_url, forged),
    ]
    for name, url, headers in connections:
        agent = f"via-{run}-{name}"
        async with ws_connect(
            url, user_agent_header=agent, additional_headers=headers
        ) as ws:
            await receive_words(ws, 1)

    query = (
        "SELECT user_agent, via, client_address FROM streaming_connection "
        f"WHERE state = 'closed' AND user_agent LIKE 'via-{run}-%'"
    )
    rows = wait_until(
        lambda: (rows := fetch_rows(database_url, query)) and len(rows) == 5 and rows,
        ROW_DELAY,
        message="the connection rows were not written",
    )
    recorded = {agent: (via, str(address)) for agent, via, address in rows}
    # A client's own X-Forwarded-For and X-Wordstream-Via change nothing: each
    # proxy replaces the one and appends its peer to the other.
    assert recorded == {
        f"via-{run}-direct": ("direct", "127.0.0.1"),
        f"via-{run}-nginx": ("nginx", "127.0.0.1"),
        f"via-{run}-node": ("node", "127.0.0.1"),
        f"via-{run}-nginx-forged": ("nginx", "127.0.0.1"),
        f"via-{run}-node-forged": ("node", "127.0.0.1"),
    }


def close_codes_recorded(database_url: str, user_agent: str) -> list[int]:
    """Return the close codes of a user agent's closed connection rows, once
    the recorder has written them."""
    query = (
        "SELECT close_code FROM streaming_connection "
        "WHERE state = 'closed' AND user_agent = %s"
    )
    rows = wait_until(
        lambda: fetch_rows(database_url, query, (user_agent,)),
        ROW_DELAY,
        message=f"no closed connection row for {user_agent}",
    )
    return [code for (code,) in rows]


async def stop_node(node: NodeProcess) -> float:
    """Send node SIGTERM, check that it exits 0 and return the seconds it took.

    The wait runs in a thread, so the test's clients complete the close
    handshakes meanwhile.
    """
    started = time.monotonic()
    node.send_signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(node.popen.wait, STOP_TIMEOUT)
    assert exit_code == 0
    return time.monotonic() - started


async def test_node_closes_streams_on_sigterm(stack, database_url):
    node = stack.node
    agent = f"sigterm-{uuid.uuid4().hex[:8]}"
    async with (
        ws_connect(node.ws_url, user_agent_header=agent) as ws,
        EventStream(node.base_url + "/api/connections") as events,
    ):
        await receive_words(ws, 1)
        await events.next_event()
        seconds = await stop_node(node)
        # Within the timeout, so every connection closed by itself.
        assert seconds < NODE_SHUTDOWN_TIMEOUT
        log = node.log()
        assert "SIGTERM received, closing" in log
        assert "still open" not in log
        # The producer's close frame reached the client, so the close is clean.
        with pytest.raises(ConnectionClosedOK):
            while True:
                await asyncio.wait_for(ws.recv(), STOP_TIMEOUT)
        assert ws.close_code == GOING_AWAY
        assert ws.close_reason == GOING_AWAY_REASON
        with pytest.raises(EOFError):
            while True:
                await events.next_event(timeout=STOP_TIMEOUT)
    wait_until(lambda: sse_clients(stack.producer) == 0, UPSTREAM_CLOSE_DELAY)
    assert close_codes_recorded(database_url, agent) == [GOING_AWAY]


async def test_node_sigterm_waits_for_client_frame_end(stack, database_url):
    """A close frame that node writes for the client follows the end of the
    frame the client was sending, never a part of it."""
    node = stack.node
    agent = f"sigterm-partial-{uuid.uuid4().hex[:8]}"
    # 200 bytes: the header has a 16-bit length and is 8 bytes long.
    text = Frame(Opcode.TEXT, b"x" * 200).serialize(mask=True)
    ping = Frame(Opcode.PING, b"before SIGTERM").serialize(mask=True)
    async with SansIOWebSocket(node.ws_url, agent) as ws:
        assert (await ws.next_frame()).opcode == Opcode.TEXT

        # The ping and 3 bytes of the text frame's header leave in one write,
        # which arrives on loopback as one segment, so node has read those 3
        # bytes once the producer's pong arrives.
        await ws.write_raw(ping + text[:3])
        while (frame := await ws.next_frame()).opcode != Opcode.PONG:
            assert frame.opcode == Opcode.TEXT
        assert frame.data == b"before SIGTERM"

        node.send_signal(signal.SIGTERM)
        wait_until(
            lambda: "SIGTERM received, closing" in node.log(),
            STOP_TIMEOUT,
            message="node did not log that it received SIGTERM",
        )
        await ws.write_raw(text[3:])

        while (frame := await ws.next_frame()).opcode != Opcode.CLOSE:
            assert frame.opcode == Opcode.TEXT
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == GOING_AWAY
        assert ws.protocol.close_rcvd.reason == GOING_AWAY_REASON
        with pytest.raises(EOFError):
            await ws.next_frame()
    assert node.popen.wait(STOP_TIMEOUT) == 0

    # The producer read the whole text frame and then the close frame. A
    # close frame inside the text frame would have been a protocol error.
    assert close_codes_recorded(database_url, agent) == [GOING_AWAY]


async def test_node_looks_up_producer_name(start_producer, tmp_path, static_root):
    producer = start_producer()
    # localhost comes from /etc/hosts: no DNS server is asked.
    node = NodeProcess(tmp_path, static_root, producer.port, producer_host="localhost")
    node.start()
    try:
        async with ws_connect(node.ws_url) as ws:
            frames = await receive_words(ws, 2)
        assert frames[1]["seq"] == frames[0]["seq"] + 1
    finally:
        node.stop()


@pytest.mark.parametrize("resolver", ["producer.test:53", "127.0.0.1:99999"])
def test_node_rejects_invalid_resolver(tmp_path, static_root, resolver):
    node = NodeProcess(tmp_path, static_root, free_port(), resolver=resolver)
    result = subprocess.run(
        node.args, env=node.env, capture_output=True, text=True, timeout=STOP_TIMEOUT
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        "RESOLVER must be an IP address with an optional port, such as "
        f'127.0.0.11 or 10.0.0.2:5353, got "{resolver}": '
    )


def test_make_nginx_reports_missing_binary():
    result = subprocess.run(
        ["make", "--no-print-directory", "nginx", "NGINX=/nonexistent/nginx"],
        cwd=ROOT,
        env={**os.environ, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == (
        "nginx is not installed: install it with "
        "'apt-get install nginx-light' (or nginx)"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", KINDS)
async def test_word_events_resume_through_proxy(stack, kind):
    proxy = stack.proxy(kind)
    last, missed = await missed_five(proxy)
    headers = {"Last-Event-ID": f"{last['epoch']}:{last['seq']}"}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, read=None)) as client,
        client.stream(
            "GET", proxy.base_url + "/api/words", headers=headers
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await sse_events(response, 7)
        wait_until(
            lambda: (
                metric_value(stack.producer.base_url, "wordstream_fanout_subscribers")
                == 1
            ),
            UPSTREAM_CLOSE_DELAY,
        )
    words = [data for _, data in events]
    assert words[:5] == missed[:5]
    seqs = [word["seq"] for word in words]
    assert seqs == list(range(last["seq"] + 1, last["seq"] + 8))
    assert [event_id for event_id, _ in events] == [
        f"{word['epoch']}:{word['seq']}" for word in words
    ]
    # The producer's stream ends with the client's.
    wait_until(
        lambda: (
            metric_value(stack.producer.base_url, "wordstream_fanout_subscribers") == 0
        ),
        UPSTREAM_CLOSE_DELAY,
        message=f"the producer still streams words to {kind} after the client left",
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_input_rejected_through_proxy(stack, kind):
    await assert_bad_input_rejected(stack.proxy(kind), stack.producer)


# Three producer replicas on one port of three loopback addresses, behind one
# name, as `docker compose up --scale producer=3` puts them. Linux routes all
# of 127.0.0.0/8 to the loopback interface.
REPLICA_NAME = "producer.test"
REPLICA_ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
# WebSocket clients opened through each proxy in the replica test.
CLIENTS_PER_PROXY = 60
# nginx starts each request's list of the name's addresses at a random one
# (ngx_resolver_export in nginx's src/core/ngx_resolver.c), so a replica's
# share of 60 connections is binomial(60, 1/3), mean 20. The chance that any
# of the three replicas gets fewer than 5 is under 3e-6.
NGINX_MIN_SHARE = 5


@dataclass
class Replicas:
    producers: list[ServerProcess]
    nginx: NginxProcess
    node: NodeProcess


@pytest.fixture
def replicas(start_producer, start_proxy, start_word_worker, redis_server):
    """Three producers that share one Redis and one word worker, and both
    proxies in front of them, looking their name up in a test DNS server."""
    start_word_worker(REDIS_URL=redis_server.url)
    port = free_port()
    env = {
        # The word worker is the only word source, as in compose.
        "IN_PROCESS_WORD_SOURCE": "0",
        # The tests read each replica's /metrics at its own address.
        "DJANGO_ALLOWED_HOSTS": ",".join(
            ["localhost", "127.0.0.1", *REPLICA_ADDRESSES]
        ),
    }
    producers = [
        start_producer(port, host=address, **env) for address in REPLICA_ADDRESSES
    ]
    with DnsServer(REPLICA_NAME, *REPLICA_ADDRESSES) as dns:
        options = {"producer_host": REPLICA_NAME, "resolver": f"127.0.0.1:{dns.port}"}
        yield Replicas(
            producers,
            start_proxy("nginx", port, **options),
            start_proxy("node", port, **options),
        )


def metric_values(producers: list[ServerProcess], name: str) -> list[float]:
    return [metric_value(producer.base_url, name) for producer in producers]


def wait_for_clients(producers: list[ServerProcess], total: int) -> list[float]:
    """Return each producer's count of its own WebSocket clients, once the
    counts add up to total."""
    name = "wordstream_active_connections"
    wait_until(
        lambda: sum(metric_values(producers, name)) == total,
        COUNT_DELAY,
        message=f"the producers' clients did not add up to {total}",
    )
    return metric_values(producers, name)


async def test_replicas_share_clients_stream_and_count(replicas):
    producers = replicas.producers
    total = 2 * CLIENTS_PER_PROXY
    async with contextlib.AsyncExitStack() as opened:
        nginx_clients = [
            await opened.enter_async_context(ws_connect(replicas.nginx.ws_url))
            for _ in range(CLIENTS_PER_PROXY)
        ]
        through_nginx = wait_for_clients(producers, CLIENTS_PER_PROXY)
        node_clients = [
            await opened.enter_async_context(ws_connect(replicas.node.ws_url))
            for _ in range(CLIENTS_PER_PROXY)
        ]
        after_node = wait_for_clients(producers, total)
        through_node = [
            after - before
            for before, after in zip(through_nginx, after_node, strict=True)
        ]

        # node takes the sorted addresses in turn, so the split is exact.
        share = CLIENTS_PER_PROXY // len(producers)
        assert through_node == [share] * len(producers)
        # nginx picks at random, so each replica gets at least a fair share.
        for address, count in zip(REPLICA_ADDRESSES, through_nginx, strict=True):
            assert count >= NGINX_MIN_SHARE, f"{address} got {count} of nginx's"

        # One stream: every client receives the same word for each seq, and
        # every seq up to one sent after the last client connected.
        clients = nginx_clients + node_clients
        target_seq = (await receive_words(clients[-1], 1))[0]["seq"] + 1
        words_by_seq: dict[int, set[str]] = {}
        for ws in clients:
            frames = await wait_for_seq(ws, target_seq)
            seqs = [frame["seq"] for frame in frames]
            assert seqs == list(range(seqs[0], target_seq + 1))
            for frame in frames:
                words_by_seq.setdefault(frame["seq"], set()).add(frame["word"])
        differing = {
            seq: words for seq, words in words_by_seq.items() if len(words) > 1
        }
        assert differing == {}

        # Global counts: every replica counts the clients of all three.
        wait_until(
            lambda: (
                metric_values(producers, "wordstream_deployment_connections")
                == [total] * len(producers)
            ),
            COUNT_DELAY,
            message=f"the replicas' deployment counts did not all reach {total}",
        )
        async with EventStream(replicas.nginx.base_url + "/api/connections") as events:
            assert (await events.next_event()) == {"active_connections": total}
        wait_until(
            lambda: metric_values(producers, "wordstream_sse_clients") == [0, 0, 0],
            UPSTREAM_CLOSE_DELAY,
        )
        # node sends three requests in a row to the three replicas in turn, so
        # the count stream of each replica is read.
        async with contextlib.AsyncExitStack() as streams:
            for _ in producers:
                url = replicas.node.base_url + "/api/connections"
                events = await streams.enter_async_context(EventStream(url))
                assert (await events.next_event()) == {"active_connections": total}
            assert metric_values(producers, "wordstream_sse_clients") == [1, 1, 1]
