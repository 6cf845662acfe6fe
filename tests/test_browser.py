"""The page in headless Chromium, driven by Playwright.

Debian's chromium package provides the browser; Playwright downloads none.
Each test runs against `manage.py runserver` serving the page itself, and the
parametrized ones also through nginx and node in front of it. Screenshots of
the page's states go to test-artifacts/screenshots/.
"""

import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)
from redis import Redis
from websockets.sync.client import connect

from streaming.leadership import SEQ_KEY

from .clients import metric_value
from .conftest import server_environment
from .proxies import NginxProcess, NodeProcess, ProxyProcess
from .servers import ROOT, ServerProcess, free_port, server_command, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Chromium's own background connections (updates, sync, QUIC probes) have
# nowhere to go on a closed network, so they are turned off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
KINDS = ["runserver", "nginx", "node"]
SHARED = ROOT / "shared"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}

# Waits, in seconds. Playwright takes milliseconds: see ms().
# Any single condition without a limit of its own.
WAIT = 10.0
# The first three words at WORD_INTERVAL=1.0, counted from the click on Start.
FIRST_WORDS_DELAY = 4.5
# The other page's counter after a page closes.
COUNT_DELAY = 1.0
# The page's WebSocket retry window grows to 15 s (config.retryCapMs), so a
# restarted server is reached within that after it accepts connections.
RESUME_DELAY = 20.0
# How often page conditions are evaluated.
POLL_INTERVAL = 0.05

PAGES_FOR_JITTER = 50


def ms(seconds: float) -> float:
    return seconds * 1000


@dataclass
class Site:
    """The page as the browser loads it, and the Django server behind it."""

    url: str
    server: ServerProcess


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install it with 'apt-get install chromium'"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def new_context(browser: Browser):
    """Open browser contexts, closed after the test.

    The pages' console messages are printed at teardown, so a failing test's
    report shows what the page logged (pytest shows output of failures only).
    """
    contexts = []
    console: list[str] = []

    def open_context(**options) -> BrowserContext:
        defaults = {"viewport": DESKTOP, "timezone_id": "UTC", "locale": "en-US"}
        context = browser.new_context(**{**defaults, **options})
        context.set_default_timeout(ms(WAIT))
        context.on("console", lambda message: console.append(console_line(message)))
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        context.close()
    print("\n".join(console))


def console_line(message: ConsoleMessage) -> str:
    clock = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
    return f"{clock} console.{message.type}: {message.text}"


@pytest.fixture
def new_page(new_context):
    """Open a page in a browser context of its own.

    A context of its own has a connection pool of its own: Chromium opens at
    most six HTTP/1.1 connections to one host per context, and every started
    page keeps one open for /api/connections.
    """
    return lambda **options: new_context(**options).new_page()


def start_proxy(kind: str, workdir: Path, server: ServerProcess) -> ProxyProcess:
    proxy_class = {"nginx": NginxProcess, "node": NodeProcess}[kind]
    return proxy_class(workdir, SHARED, server.port).start()


@pytest.fixture(params=KINDS)
def start_site(request, start_server, tmp_path):
    """Start runserver and, for nginx and node, that proxy in front of it."""
    proxies = []

    def start(**env: str) -> Site:
        server = start_server("runserver", **env)
        if request.param == "runserver":
            return Site(server.base_url + "/", server)
        proxies.append(start_proxy(request.param, tmp_path, server))
        return Site(proxies[-1].base_url + "/", server)

    yield start
    for proxy in proxies:
        proxy.stop()


@pytest.fixture(scope="module", params=KINDS)
def running_site(request, tmp_path_factory, database_url):
    """runserver with the suite's settings, alone or behind one proxy, shared
    by the tests that leave it running, because a start takes about 2 s."""
    workdir = tmp_path_factory.mktemp(request.param)
    port = free_port()

    env = server_environment(database_url)
    args = server_command("runserver", port)
    server = ServerProcess("runserver", args, env, workdir / "runserver.log", port)
    server.start()

    proxy = None
    try:
        if request.param == "runserver":
            yield Site(server.base_url + "/", server)
        else:
            proxy = start_proxy(request.param, workdir, server)
            yield Site(proxy.base_url + "/", server)
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()


@pytest.fixture
def site(running_site):
    """The running site once the pages of earlier tests have left it."""
    wait_for_active_connections(running_site.server, 0)
    return running_site


def wait_for(page: Page, function: str, timeout: float = WAIT, arg=None):
    """Evaluate a JavaScript function in the page until it returns a truthy
    value, and return that value."""
    handle = page.wait_for_function(
        function, arg=arg, timeout=ms(timeout), polling=ms(POLL_INTERVAL)
    )
    return handle.json_value()


def shown_seqs(page: Page) -> list[int]:
    """Return the data-seq of each word item, top to bottom."""
    return page.eval_on_selector_all(
        "#words li.word", "items => items.map(item => Number(item.dataset.seq))"
    )


def shown_words(page: Page) -> list[str]:
    return page.eval_on_selector_all(
        "#words li.word .word-text", "spans => spans.map(span => span.textContent)"
    )


def wait_for_words(page: Page, count: int, timeout: float = WAIT) -> None:
    wait_for(
        page,
        "count => document.querySelectorAll('#words li.word').length >= count",
        timeout,
        arg=count,
    )


def active_connections(server: ServerProcess) -> float:
    return metric_value(server.base_url, "wordstream_active_connections")


def wait_for_active_connections(server: ServerProcess, count: int) -> None:
    wait_until(
        lambda: active_connections(server) == count,
        WAIT,
        message=f"the server did not count {count} WebSocket clients",
    )


def start_stream(page: Page) -> None:
    page.click("#start")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")


def write_word_list(path: Path, words: list[str]) -> Path:
    path.write_text("# words for a browser test\n" + "\n".join(words) + "\n")
    return path


def png_size(path: Path) -> tuple[int, int]:
    """Return the width and height from a PNG file's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_start_shows_words_newest_first(start_site, new_page):
    site = start_site(WORD_INTERVAL="1.0")
    page = new_page()
    page.goto(site.url)
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "idle")

    clicked_at = time.monotonic()
    page.click("#start")
    wait_for_words(page, 3, timeout=FIRST_WORDS_DELAY)
    assert time.monotonic() - clicked_at <= FIRST_WORDS_DELAY

    expect(status).to_have_attribute("data-state", "connected")
    expect(status).to_have_text("Connected")
    seqs = shown_seqs(page)
    assert len(seqs) >= 3
    assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1))
    assert page.locator("#words li.gap").count() == 0
    items = page.eval_on_selector_all(
        "#words li.word",
        """items => items.map(item => ({
            word: item.querySelector('.word-text').textContent,
            datetime: item.querySelector('time').dateTime,
            clock: item.querySelector('time').textContent,
        }))""",
    )
    for item in items:
        assert re.fullmatch(r"\S+", item["word"]), item
        sent = datetime.fromisoformat(item["datetime"])
        assert abs((datetime.now(UTC) - sent).total_seconds()) < 10, item
        # The context's time zone is UTC, so the clock shows the ISO time.
        assert item["clock"] == sent.strftime("%H:%M:%S"), item
    times = [datetime.fromisoformat(item["datetime"]) for item in items]
    assert times == sorted(times, reverse=True)


def test_counters_follow_second_page(site, new_page):
    first = new_page()
    first.goto(site.url)
    start_stream(first)
    expect(first.locator("#active-connections")).to_have_text("1")

    second = new_page()
    second.goto(site.url)
    start_stream(second)
    expect(first.locator("#active-connections")).to_have_text("2")
    expect(second.locator("#active-connections")).to_have_text("2")
    assert active_connections(site.server) == 2

    closed_at = time.monotonic()
    second.close()
    expect(first.locator("#active-connections")).to_have_text(
        "1", timeout=ms(COUNT_DELAY)
    )
    assert time.monotonic() - closed_at <= COUNT_DELAY
    assert active_connections(site.server) == 1


def test_stop_closes_socket(site, new_page):
    page = new_page()
    page.goto(site.url)
    start_stream(page)
    wait_for_words(page, 1)
    counter = page.locator("#active-connections")
    expect(counter).to_have_text("1")
    assert active_connections(site.server) == 1

    page.click("#stop")
    wait_for_active_connections(site.server, 0)
    # The counter shows the page leaving, then the count stream closes too.
    expect(counter).to_have_text("0")
    expect(page.locator("#status")).to_have_attribute("data-state", "stopped")
    expect(page.locator("#connections-card")).to_have_attribute("data-state", "idle")
    assert page.evaluate("() => window.wordstream.socket") is None
    assert page.evaluate("() => window.wordstream.eventSource") is None
    wait_until(
        lambda: metric_value(site.server.base_url, "wordstream_sse_clients") == 0,
        WAIT,
        message="the count stream stayed open after Stop",
    )
    received = page.evaluate("() => window.wordstream.received")
    seqs = shown_seqs(page)

    # A client of our own proves that words went on while the page stayed
    # still, and the stopped page no longer follows the count.
    with connect(
        site.server.ws_url, origin=site.server.base_url, open_timeout=WAIT
    ) as client:
        for _ in range(3):
            client.recv(timeout=WAIT)
        expect(counter).to_have_text("0")
    assert page.evaluate("() => window.wordstream.received") == received
    assert shown_seqs(page) == seqs


def test_pause_holds_words_and_keeps_socket(site, new_page):
    page = new_page()
    page.goto(site.url)
    start_stream(page)
    wait_for_words(page, 2)
    pause = page.locator("#pause")
    expect(pause).to_have_text("Pause")

    pause.click()
    expect(page.locator("#status")).to_have_attribute("data-state", "paused")
    expect(pause).to_have_text("Continue")
    paused_at = page.evaluate(
        "() => window.wordstream.received - window.wordstream.heldWords"
    )
    seqs = shown_seqs(page)
    wait_for(page, "count => window.wordstream.heldWords >= count", arg=3)
    assert shown_seqs(page) == seqs
    assert page.evaluate("() => window.wordstream.socket.readyState") == 1
    assert active_connections(site.server) == 1
    expect(page.locator("#active-connections")).to_have_text("1")

    pause.click()
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(pause).to_have_text("Pause")
    wait_for(page, "() => document.querySelector('#words > li').matches('li.word')")
    held = page.locator("#words li.held")
    assert held.count() == 1
    held_count = int(held.get_attribute("data-held"))
    assert held_count >= 3
    # The words received while paused are exactly those not in the list.
    newer = page.eval_on_selector(
        "#words li.held", "item => Number(item.previousElementSibling.dataset.seq)"
    )
    assert newer - seqs[0] - 1 == held_count
    assert page.evaluate("() => window.wordstream.heldWords") == 0
    after = page.evaluate(
        """() => {
            let above = 0;
            let item = document.querySelector('#words li.held').previousElementSibling;
            for (; item !== null; item = item.previousElementSibling) above += 1;
            return { received: window.wordstream.received, above };
        }"""
    )
    assert after["received"] - paused_at == held_count + after["above"]
    assert active_connections(site.server) == 1


def test_reconnects_after_server_restart(start_site, new_page):
    site = start_site()
    page = new_page()
    page.goto(site.url)
    start_stream(page)
    wait_for_words(page, 1)
    status = page.locator("#status")

    # runserver's reloader kills the serving process when it gets SIGTERM.
    site.server.stop()
    expect(status).to_have_attribute("data-state", "reconnecting")
    expect(status).to_have_text(re.compile(r"Reconnecting… \(attempt \d+\)"))
    expect(page.locator("#connections-card")).to_have_attribute(
        "data-state", "reconnecting"
    )
    received = page.evaluate("() => window.wordstream.received")

    site.server.start()
    expect(status).to_have_attribute(
        "data-state", "connected", timeout=ms(RESUME_DELAY)
    )
    wait_for(
        page,
        "count => window.wordstream.received > count",
        RESUME_DELAY,
        arg=received,
    )
    expect(page.locator("#active-connections")).to_have_text(
        "1", timeout=ms(RESUME_DELAY)
    )
    assert page.evaluate("() => window.wordstream.retryDelays.length") >= 1


def test_reconnect_recovers_missed_words(
    start_server, start_word_worker, redis_server, new_page
):
    env = {"REDIS_URL": redis_server.url, "IN_PROCESS_WORD_SOURCE": "0"}
    # The worker goes on publishing into the history while the server is down.
    start_word_worker(**env)
    server = start_server("serve", **env)
    page = new_page()
    page.goto(server.base_url + "/")
    # Retries within 1 s of each other, so the page is back soon after the
    # server: a later retry would only add words to recover.
    page.evaluate("() => { window.wordstream.config.retryCapMs = 1000; }")
    start_stream(page)
    wait_for_words(page, 2)

    server.stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "reconnecting")
    last_seq = page.evaluate("() => window.wordstream.lastSeq")
    redis = Redis.from_url(redis_server.url)
    wait_until(lambda: int(redis.get(SEQ_KEY) or 0) >= last_seq + 3, WAIT)
    server.start()

    # Either notice counts here, so a failed recovery fails below with its
    # reason in the text.
    notice = page.locator("#words li.recovered, #words li.unrecovered")
    expect(notice).to_have_count(1, timeout=ms(RESUME_DELAY))
    recovered = page.locator("#words li.recovered")
    assert recovered.count() == 1, notice.text_content()
    count = int(recovered.get_attribute("data-recovered"))
    assert count >= 3
    expect(recovered).to_have_text(f"{count} missed words recovered")
    wait_for(page, "seq => window.wordstream.lastSeq > seq", arg=last_seq + count)
    seqs = shown_seqs(page)
    assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1))
    assert page.locator("#words li.gap").count() == 0
    assert page.evaluate("() => window.wordstream.recovered") == count


def test_retries_spread_and_back_off(start_server, new_context):
    """Pages that lose the server at the same moment retry at different times,
    in windows that double up to the cap."""
    server = start_server("runserver")
    # The page's first window; a cap lower than its 15 s is reached at the
    # third attempt, which keeps the wait short.
    base, cap, attempts = 500, 1000, 3
    # One context for all pages, because each context took about 0.3 s of CPU
    # to open (measured on 2 cores). Only six of its pages get a
    # /api/connections stream, because Chromium opens at most six connections
    # to a host per context. WebSockets are not counted there.
    context = new_context()
    pages = [context.new_page() for _ in range(PAGES_FOR_JITTER)]
    for page in pages:
        page.goto(server.base_url + "/", wait_until="commit")
    for page in pages:
        page.wait_for_load_state("load")
        # Clicked from the page's own script: Playwright's checks before a
        # click took up to 2 s per page with 50 pages open on a busy machine.
        page.evaluate(
            """cap => {
                window.wordstream.config.retryCapMs = cap;
                document.getElementById('start').click();
            }""",
            cap,
        )
    wait_for_active_connections(server, PAGES_FOR_JITTER)
    assert pages[0].evaluate("() => window.wordstream.config.retryBaseMs") == base
    for page in pages:
        assert page.evaluate("() => window.wordstream.retryDelays") == []

    server.stop()

    def delays_of_every_page() -> list[list[int]] | None:
        script = "count => window.wordstream.retryDelays.slice(0, count)"
        delays = [page.evaluate(script, attempts) for page in pages]
        return delays if all(len(each) == attempts for each in delays) else None

    delays = wait_until(delays_of_every_page, WAIT, interval=POLL_INTERVAL)

    first = [page_delays[0] for page_delays in delays]
    assert statistics.pstdev(first) > base / 5, first
    assert max(first) - min(first) > base / 2, first
    assert len(set(first)) >= PAGES_FOR_JITTER - 10, first
    assert Counter(first).most_common(1)[0][1] <= 4, first

    for attempt in range(attempts):
        window = min(cap, base * 2**attempt)
        column = [page_delays[attempt] for page_delays in delays]
        assert all(0 <= delay <= window for delay in column), (attempt, column)
        # Draws from a window half as wide would all stay at or below
        # window / 2. From the full window, 50 draws do so with a
        # probability of 2**-50.
        assert max(column) > window / 2, (attempt, column)


def test_markup_word_renders_as_text(start_server, new_page, tmp_path):
    markup = ["<b>bold</b>", "<img/src=x/onerror=window.pwned=1>"]
    words = write_word_list(tmp_path / "markup.txt", markup)
    server = start_server("runserver", WORD_LIST=str(words))
    page = new_page()
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server.base_url + "/")
    start_stream(page)
    wait_for(
        page,
        """words => {
            const shown = [...document.querySelectorAll('#words .word-text')];
            return words.every(word => shown.some(span => span.textContent === word));
        }""",
        arg=markup,
    )

    items = page.eval_on_selector_all(
        "#words li.word .word-text",
        "spans => spans.map(span => [span.textContent, span.childElementCount])",
    )
    for text, children in items:
        assert text in markup
        assert children == 0
    assert page.locator("#words img, #words b").count() == 0
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    announcer = page.locator("#feed-announcer")
    expect(announcer).to_have_text(re.compile(r"Latest word: .+"))
    assert announcer.text_content().removeprefix("Latest word: ") in markup
    assert page.eval_on_selector("#feed-announcer", "e => e.childElementCount") == 0
    assert [url for url in requests if urlsplit(url).path == "/x"] == []


def test_page_stays_on_its_origin(site, new_page):
    page = new_page()
    page.context.add_init_script(
        """
        window.cspViolations = [];
        document.addEventListener('securitypolicyviolation', (event) => {
            window.cspViolations.push(event.violatedDirective + ' ' + event.blockedURI);
        });
        """
    )
    requests, console_errors, page_errors = [], [], []

    def record_console(message) -> None:
        if message.type == "error":
            console_errors.append(message.text)

    page.on("request", lambda request: requests.append(request.url))
    page.on("console", record_console)
    page.on("pageerror", lambda error: page_errors.append(str(error)))

    response = page.goto(site.url)
    assert response.status == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    page.wait_for_load_state("load")
    origin = urlsplit(site.url)
    loaded = [urlsplit(url) for url in requests]
    assert all(url[:2] == origin[:2] for url in loaded), requests
    paths = {url.path for url in loaded}
    assert {"/", "/style.css", "/app.js"} <= paths
    assert paths <= {"/", "/style.css", "/app.js", "/favicon.svg"}

    with page.expect_websocket() as socket_info:
        start_stream(page)
    assert socket_info.value.url == origin._replace(scheme="ws", path="/ws").geturl()
    wait_for_words(page, 3)
    expect(page.locator("#active-connections")).to_have_text("1")
    page.click("#pause")
    page.click("#pause")
    page.click("#stop")
    expect(page.locator("#status")).to_have_attribute("data-state", "stopped")

    assert all(urlsplit(url)[:2] == origin[:2] for url in requests), requests
    assert console_errors == []
    assert page_errors == []
    assert page.evaluate("() => window.cspViolations") == []


def test_keyboard_starts_stream(site, new_page):
    page = new_page()
    page.goto(site.url)
    assert page.get_attribute("#feed-announcer", "aria-live") == "polite"
    assert page.get_attribute("#status", "role") == "status"

    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "start"
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    assert page.evaluate("() => document.activeElement.id") == "pause"
    wait_for_words(page, 1)
    announcer = page.locator("#feed-announcer")
    expect(announcer).to_have_text(re.compile(r"Latest word: \S+"))
    assert announcer.text_content().removeprefix("Latest word: ") in shown_words(page)


def test_phone_width_has_no_horizontal_scroll(start_server, new_page, tmp_path):
    long_word = "pneumonoultramicroscopicsilicovolcanoconiosis" * 2
    words = write_word_list(tmp_path / "long.txt", [long_word])
    server = start_server("runserver", WORD_LIST=str(words))
    page = new_page(viewport=PHONE)
    page.goto(server.base_url + "/")
    start_stream(page)
    wait_for_words(page, 3)
    expect(page.locator("#active-connections")).to_have_text("1")

    widths = page.evaluate(
        """() => ({
            scroll: document.documentElement.scrollWidth,
            client: document.documentElement.clientWidth,
            body: document.body.scrollWidth,
        })"""
    )
    width = PHONE["width"]
    assert widths == {"scroll": width, "client": width, "body": width}


def test_screenshots_of_each_state(start_server, new_page):
    server = start_server("runserver", WORD_INTERVAL="0.5")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = []

    def shoot(page: Page, name: str) -> None:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=path, full_page=True, animations="disabled")
        shots.append(path)

    page = new_page()
    phone = new_page(viewport=PHONE)
    dark = new_page(color_scheme="dark")
    for each in (page, phone, dark):
        each.goto(server.base_url + "/")
    shoot(page, "idle")
    for each in (page, phone, dark):
        start_stream(each)
    for each in (page, phone, dark):
        wait_for_words(each, 5)
        expect(each.locator("#active-connections")).to_have_text("3")
    shoot(page, "connected")
    shoot(phone, "phone")
    shoot(dark, "dark")
    phone.close()
    dark.close()

    page.click("#pause")
    wait_for(page, "() => window.wordstream.heldWords >= 2")
    shoot(page, "paused")
    page.click("#pause")
    page.click("#stop")
    expect(page.locator("#active-connections")).to_have_text("0")
    shoot(page, "stopped")

    start_stream(page)
    server.stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "reconnecting")
    shoot(page, "reconnecting")

    assert [path.name for path in shots] == [
        "idle.png",
        "connected.png",
        "phone.png",
        "dark.png",
        "paused.png",
        "stopped.png",
        "reconnecting.png",
    ]
    for path in shots:
        viewport = PHONE if path.stem == "phone" else DESKTOP
        width, height = png_size(path)
        assert width == viewport["width"], path
        assert height >= viewport["height"], path
