"""Samples taken from outside the servers: CPU time and RSS from /proc, the
project's Prometheus metrics, the reference's /stats, and Redis's command
counts."""

import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Requests to /metrics made to find every server process: each request reaches
# whichever process accepts it.
MAX_METRICS_REQUESTS = 40


def _stat_fields(pid: int) -> list[str]:
    """Return the fields of /proc/PID/stat after the command name."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may contain spaces.
    return text.rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """Return the pids of every living process below pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


@dataclass
class TreeSample:
    """CPU seconds and resident memory of a process and its descendants."""

    cpu_seconds: float
    rss_bytes: int
    processes: int


def sample_tree(pid: int) -> TreeSample:
    """Add up CPU time (user and system) and RSS over pid and its descendants.

    The CPU time of children that have exited is left out: the servers under
    test start their processes once.
    """
    cpu_ticks = 0
    rss_pages = 0
    processes = 0
    for member in [pid, *descendants(pid)]:
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        # utime and stime are fields 14 and 15 of stat, rss is field 24;
        # the list starts at field 3.
        cpu_ticks += int(fields[11]) + int(fields[12])
        rss_pages += int(fields[21])
        processes += 1
    return TreeSample(cpu_ticks / CLOCK_TICKS, rss_pages * PAGE_SIZE, processes)


def machine_busy_seconds() -> float:
    """Return the CPU seconds all cores have spent busy since boot.

    Busy is every state of /proc/stat's cpu line but idle and iowait,
    including interrupt time, which no process's CPU time contains.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields]
    # user nice system idle iowait irq softirq steal; guest time is in user.
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / CLOCK_TICKS


def wait_for_quiet_machine(
    max_busy_cores: float, timeout: float, period: float = 1.0
) -> float:
    """Wait until the machine is below max_busy_cores for one period.

    Returns the last busy measurement, in cores, which is above the limit only
    if timeout seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while True:
        before = machine_busy_seconds()
        time.sleep(period)
        busy = (machine_busy_seconds() - before) / period
        if busy <= max_busy_cores or time.monotonic() > deadline:
            return busy


@dataclass
class ProcessMetrics:
    """The counters of one server process's /metrics page."""

    active_connections: float
    broadcast_seconds_sum: float
    broadcasts: float
    frames_sent: float
    frames_dropped: float
    sse_clients: float


def _read_metrics(url: str) -> tuple[tuple[float, float], ProcessMetrics]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels or sample.name.endswith(("_sum", "_count")):
                values[sample.name] = sample.value
    metrics = ProcessMetrics(
        active_connections=values.get("wordstream_active_connections", 0.0),
        broadcast_seconds_sum=values.get(
            "wordstream_broadcast_duration_seconds_sum", 0.0
        ),
        broadcasts=values.get("wordstream_broadcast_duration_seconds_count", 0.0),
        frames_sent=values.get("wordstream_frames_sent_total", 0.0),
        frames_dropped=values.get("wordstream_frames_dropped_total", 0.0),
        sse_clients=values.get("wordstream_sse_clients", 0.0),
    )
    # Processes forked at once can share a start time, so the connection
    # count, which stays put while the window is measured, tells them apart.
    key = (values.get("process_start_time_seconds", 0.0), metrics.active_connections)
    return key, metrics


def scrape_processes(
    base_url: str, processes: int
) -> dict[tuple[float, float], ProcessMetrics]:
    """Return /metrics of each server process, keyed by process.

    Each request is a new connection, so the kernel hands it to any of the
    processes; the loop stops once `processes` distinct ones answered, or
    after MAX_METRICS_REQUESTS requests.
    """
    found: dict[tuple[float, float], ProcessMetrics] = {}
    for _ in range(MAX_METRICS_REQUESTS):
        key, metrics = _read_metrics(base_url + "/metrics")
        found[key] = metrics
        if len(found) >= processes:
            break
    return found


def read_reference_stats(base_url: str) -> dict[str, float]:
    with urllib.request.urlopen(base_url + "/stats", timeout=10) as response:
        return json.loads(response.read())


def redis_command_calls(client: redis.Redis) -> dict[str, int]:
    """Return calls per Redis command, without the INFO calls that read them.

    The client should stay connected between two calls: a new connection's
    own handshake commands would be counted as the server's.
    """
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(fields["calls"])
        for name, fields in stats.items()
        if name != "cmdstat_info"
    }
