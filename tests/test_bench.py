"""Smoke test of the benchmark (bench/): a short run against real servers, so
that the load generator and the row it feeds keep working."""

import json
import shutil
import socket
import subprocess

import pytest

from bench.clients import LOADGEN, WS_CLIENTS, ensure_installed, node_command

from .servers import PYTHON, ROOT, Process, free_port, wait_until

pytestmark = pytest.mark.slow

LOADGEN_DIR = ROOT / "bench" / "loadgen"
# Seconds the short benchmark run may take; it needs about 30.
BENCH_TIMEOUT = 100
# Seconds the short reconnect-burst run may take; it needs about 5.
RECOVERY_TIMEOUT = 60
# Ticks of the points at --sse-beside clients, the only size of the short run.
PAIR_TICKS = 6
ROW_KEYS = {
    "config",
    "clients",
    "sse_clients",
    "deflate",
    "connect_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "lost",
    "rss_kb_per_conn",
    "server_cpu",
    "redis_cmds_per_tick",
    "broadcast_ms",
    "loadgen_cpu",
}


@pytest.fixture(scope="module")
def loadgen_packages():
    """Install the load generator's locked packages if `npm ci` has not run."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the load generator needs Node and npm")
    if not (LOADGEN_DIR / "node_modules" / "ws").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=LOADGEN_DIR, check=True
        )
    # Builds the C WebSocket clients.
    ensure_installed()


@pytest.fixture(scope="module")
def bench_rows(tmp_path_factory, loadgen_packages):
    output = tmp_path_factory.mktemp("bench")
    args = [
        PYTHON,
        "-m",
        "bench.run",
        "--configs",
        "serve-1,reference",
        "--sizes",
        "20",
        "--sse-clients",
        "5",
        "--sse-beside",
        "20",
        "--deflate",
        "off",
        "--ticks",
        "5",
        "--sse-ticks",
        str(PAIR_TICKS),
        "--interval",
        "0.2",
        "--output",
        str(output),
        "--no-plot",
        # The smoke test checks that the benchmark works, not the figures.
        "--attempts",
        "1",
        "--quiet-timeout",
        "0",
    ]
    bench = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, errors = bench.communicate(timeout=BENCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the benchmark stop the servers it started.
        bench.terminate()
        _, errors = bench.communicate(timeout=60)
        pytest.fail(f"the benchmark took over {BENCH_TIMEOUT} s:\n{errors}")
    assert bench.returncode == 0, errors
    assert (output / "latest.md").is_file()
    return json.loads((output / "latest.json").read_text())


def test_bench_writes_one_row_per_point(bench_rows):
    points = [(row["config"], row["sse_clients"]) for row in bench_rows]
    assert points == [
        ("serve-1", 0),
        ("serve-1", 5),
        ("reference", 0),
    ]


def test_bench_rows_have_every_key(bench_rows):
    for row in bench_rows:
        missing = ROW_KEYS - row.keys()
        assert not missing, (row["config"], missing)


def test_bench_clients_connect_and_lose_nothing(bench_rows):
    for row in bench_rows:
        assert row["connected"] == 20, row
        assert row["lost"] == 0, row
        assert row["disconnects"] == 0, row
        assert row["ticks"] == PAIR_TICKS, row
        assert row["frames_received"] == 20 * PAIR_TICKS, row
        assert row["sse_failed"] == 0, row


def test_bench_follows_counts_during_connects(bench_rows):
    serve = bench_rows[1]
    assert serve["sse_clients"] == 5
    # Every SSE client ended the connects with the count of 20 clients.
    assert serve["sse_final_missing"] == 0
    assert serve["sse_final_delay_ms"] is not None
    assert 1 <= serve["sse_burst_max_per_s"] <= 11


def test_loadgen_counts_failed_sse_clients_as_missing(start_server, loadgen_packages):
    server = start_server("uvicorn", WORD_INTERVAL="0.2")
    options = ("--clients", "3", "--sse-clients", "2", "--ticks", "1")
    # The server returns 404 for this path, so neither SSE client gets an event.
    options += ("--sse-path", "/missing", "--interval", "0.2", "--settle", "0.2")
    result = run_loadgen(server.ws_url, *options)
    assert result["sse_failed"] == 2
    assert result["sse_final_missing"] == 2
    assert result["sse_final_delay_ms"] is None
    assert result["sse_burst_max_per_s"] == 0


def test_bench_without_sse_has_no_burst_figures(bench_rows):
    serve = bench_rows[0]
    assert serve["sse_burst_max_per_s"] is None
    assert serve["sse_final_delay_ms"] is None


def test_bench_reports_each_tick_latency(bench_rows):
    for row in bench_rows:
        ticks = row["tick_latency_ms"]
        assert len(ticks) == PAIR_TICKS, row
        for lowest, highest in ticks:
            assert 0 <= lowest <= highest, row
        # The slowest frame of the window is the highest of its ticks, which
        # the load generator rounds to a whole millisecond.
        slowest = max(highest for _, highest in ticks)
        assert abs(slowest - row["max_ms"]) <= 0.5, row


def test_bench_reads_server_metrics(bench_rows):
    serve = bench_rows[0]
    assert serve["broadcast_ms"] is not None
    assert serve["clients_by_process"] == [20]
    assert serve["redis_cmds_per_tick"] > 0
    assert bench_rows[1]["sse_events"] >= 5
    reference = bench_rows[2]
    assert reference["broadcast_ms"] is not None
    assert reference["redis_cmds_per_tick"] is None


@pytest.fixture(scope="module")
def recovery_row(tmp_path_factory, loadgen_packages):
    output = tmp_path_factory.mktemp("recovery")
    args = [
        PYTHON,
        "-m",
        "bench.recovery",
        "--live",
        "50",
        "--recovering",
        "20",
        "--missed-ticks",
        "3",
        "--ticks",
        "3",
        "--interval",
        "0.2",
        "--settle",
        "0.2",
        "--output",
        str(output),
        "--attempts",
        "1",
        "--quiet-timeout",
        "0",
    ]
    bench = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=RECOVERY_TIMEOUT
    )
    assert bench.returncode == 0, bench.stderr
    assert (output / "recovery.md").is_file()
    return json.loads((output / "recovery.json").read_text())


def test_recovery_bench_recovers_every_client(recovery_row):
    assert recovery_row["recovering_closed"] == 20
    assert recovery_row["reconnected"] == 20
    assert recovery_row["recovered_true"] == 20
    assert recovery_row["recovery_complete"] is True
    assert recovery_row["recovery_s"] is not None


def test_recovery_bench_is_exact(recovery_row):
    assert recovery_row["exact"] == 20, recovery_row["problems"]
    assert recovery_row["problems"] == {}
    assert recovery_row["missed_words_min"] >= 3
    assert recovery_row["live_lost"] == 0
    assert recovery_row["live_disconnects"] == 0


def test_recovery_bench_measures_live_latency(recovery_row):
    assert recovery_row["baseline"]["frames"] == 50 * 3
    assert recovery_row["during"]["frames"] >= 50
    assert recovery_row["p99_ratio"] is not None
    assert len(recovery_row["targets"]) == 2


def run_loadgen(url: str, *options: str) -> dict:
    """Run loadgen.mjs against url and return its result."""
    args = [*node_command(), str(LOADGEN), "--url", url, *options]
    run = subprocess.run(
        args, capture_output=True, text=True, timeout=BENCH_TIMEOUT, check=False
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def test_ws_clients_answer_pings(start_server, loadgen_packages):
    # The server closes a client that does not reply to its ping within 0.4 s.
    server = start_server(
        "serve", WORD_INTERVAL="0.2", WS_PING_INTERVAL="0.2", WS_PING_TIMEOUT="0.4"
    )
    options = ("--clients", "5", "--ticks", "10", "--interval", "0.2")
    result = run_loadgen(server.ws_url, *options, "--settle", "1")
    assert result["disconnects"] == 0, result
    assert result["lost"] == 0, result
    assert result["frames"] == 5 * 10, result
    assert result["errors"] == {}, result


@pytest.fixture
def reference_server(tmp_path):
    port = free_port()
    args = [PYTHON, str(ROOT / "bench" / "reference_server.py")]
    args += ["--port", str(port), "--interval", "0.2"]
    server = Process("reference", args, {}, tmp_path / "reference.log").start()

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout=30, message=server.log())
    yield port
    server.stop()


def test_ws_clients_inflate_compressed_frames(reference_server, loadgen_packages):
    # The reference server accepts permessage-deflate, as websockets does.
    url = f"ws://127.0.0.1:{reference_server}/"
    options = ("--clients", "4", "--ticks", "5", "--interval", "0.2", "--deflate")
    result = run_loadgen(url, *options, "--settle", "0.4")
    assert result["deflate_clients"] == 4, result
    assert result["frames"] == 4 * 5, result
    assert result["lost"] == 0, result
    assert result["errors"] == {}, result
    assert 0 < result["p50_ms"] <= result["max_ms"] < 1000, result


def test_ws_clients_count_rejected_handshakes(start_server, loadgen_packages):
    server = start_server("serve", WORD_INTERVAL="0.2")
    args = [str(WS_CLIENTS), f"--port={server.port}", "--path=/missing"]
    args += ["--origin=http://127.0.0.1", "--clients=3", "--attempts=2"]
    clients = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        events = (json.loads(line) for line in clients.stdout)
        connected = next(event for event in events if event["event"] == "connected")
        clients.stdin.write("result\n")
        clients.stdin.flush()
        result = next(events)
        clients.stdin.close()
        assert clients.wait(timeout=10) == 0
    finally:
        clients.kill()
    assert connected["connected"] == 0, connected
    assert connected["connect_failed"] == 3, connected
    assert connected["connect_retries"] == 3, connected
    assert result["errors"] == {"Unexpected server response: 404": 6}, result
