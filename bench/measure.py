"""One measurement: a server of one configuration, a number of clients, and
the samples taken at the load generator's window markers."""

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.clients import LoadSpec, run_loadgen
from bench.probes import (
    ProcessMetrics,
    TreeSample,
    machine_busy_seconds,
    read_reference_stats,
    redis_command_calls,
    sample_tree,
    scrape_processes,
    wait_for_quiet_machine,
)
from bench.servers import Config, Process, RedisServer, ServerUnderTest

# Clients of the warm-up run before the idle RSS is read: they load the code
# paths of the handshake, the fan-out and the event stream.
WARMUP_CLIENTS = 20
WARMUP_SSE_CLIENTS = 2
# Seconds to wait after the warm-up clients close before the idle RSS is read.
IDLE_PAUSE = 2.0
# Other work on the machine distorts the figures: before the clients open, the
# run waits up to Point.quiet_timeout seconds for the whole machine to use at
# most QUIET_CORES, the idle server included.
QUIET_CORES = 0.3


@dataclass
class Point:
    """The parameters of one measurement."""

    config: Config
    clients: int
    sse_clients: int
    deflate: bool
    ticks: int
    interval: float
    quiet_timeout: float = 0.0


@dataclass
class Sample:
    """Everything read at one window marker."""

    wall: float
    server: TreeSample
    machine_busy: float
    redis: TreeSample | None = None
    redis_calls: dict[str, int] = field(default_factory=dict)
    metrics: dict[tuple[float, float], ProcessMetrics] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)


class Measurement:
    """Starts the processes of one point, runs the load and builds its row."""

    def __init__(self, point: Point, workdir: Path, database: Path) -> None:
        self.point = point
        self.workdir = workdir
        self.database = database
        self.redis: RedisServer | None = None
        self.server: ServerUnderTest | None = None
        self.redis_client: redis.Redis | None = None
        self.samples: dict[str, Sample] = {}

    def run(self, progress: Callable[[str], None]) -> dict[str, Any]:
        try:
            self._start()
            assert self.server is not None
            idle = self._idle_rss()
            busy = wait_for_quiet_machine(QUIET_CORES, self.point.quiet_timeout)
            if busy > QUIET_CORES:
                progress(
                    f"warning: the machine is busy ({busy:.2f} cores) before the run"
                )
            spec = LoadSpec(
                ws_url=self.server.ws_url,
                clients=self.point.clients,
                sse_clients=self.point.sse_clients,
                deflate=self.point.deflate,
                ticks=self.point.ticks,
                interval=self.point.interval,
            )
            result = run_loadgen(spec, lambda event: self._on_event(event, progress))
            return self._row(result, idle)
        finally:
            self._stop()

    def _start(self) -> None:
        config = self.point.config
        redis_url = ""
        if config.uses_redis:
            self.redis = RedisServer(self.workdir)
            self.redis.start()
            redis_url = self.redis.url
            self.redis_client = redis.Redis.from_url(redis_url)
            redis_command_calls(self.redis_client)
        database = self.workdir / f"{config.name}-{time.monotonic_ns()}.sqlite3"
        shutil.copyfile(self.database, database)
        self.server = ServerUnderTest(
            config,
            self.workdir,
            self.point.interval,
            f"sqlite:///{database}",
            redis_url,
        )
        self.server.start()

    def _stop(self) -> None:
        if self.redis_client is not None:
            self.redis_client.close()
        processes: list[Process | None] = [self.server, self.redis]
        for process in processes:
            if process is not None:
                process.stop()

    def _idle_rss(self) -> int:
        """Warm the server up with a few clients, then return its RSS in bytes."""
        assert self.server is not None
        warmup = LoadSpec(
            ws_url=self.server.ws_url,
            clients=WARMUP_CLIENTS,
            sse_clients=WARMUP_SSE_CLIENTS,
            deflate=self.point.deflate,
            ticks=1,
            interval=self.point.interval,
            settle=0.1,
        )
        run_loadgen(warmup, lambda event: None)
        time.sleep(IDLE_PAUSE)
        return sample_tree(self.server.pid).rss_bytes

    def _on_event(self, event: dict[str, Any], progress: Callable[[str], None]) -> None:
        kind = event["event"]
        if kind == "progress":
            progress(
                f"connecting: {event['opened']}/{event['clients']} open, "
                f"{event['failed']} failed"
            )
        elif kind == "connected":
            progress(
                f"{event['connected']} connected in {event['connect_s']:.2f} s, "
                "measuring"
            )
        elif kind in {"window_start", "window_end"}:
            self.samples[kind] = self._sample()

    def _sample(self) -> Sample:
        assert self.server is not None
        sample = Sample(
            wall=time.monotonic(),
            server=sample_tree(self.server.pid),
            machine_busy=machine_busy_seconds(),
        )
        if self.redis is not None and self.redis_client is not None:
            sample.redis = sample_tree(self.redis.pid)
            sample.redis_calls = redis_command_calls(self.redis_client)
        if self.point.config.kind == "reference":
            sample.reference = read_reference_stats(self.server.base_url)
        else:
            sample.metrics = scrape_processes(
                self.server.base_url, self.point.config.processes
            )
        return sample

    def _row(self, result: dict[str, Any], idle_rss: int) -> dict[str, Any]:
        point = self.point
        start = self.samples["window_start"]
        end = self.samples["window_end"]
        seconds = end.wall - start.wall
        ticks = point.ticks
        connected = result["connected"]
        row: dict[str, Any] = {
            "config": point.config.name,
            "clients": point.clients,
            "sse_clients": point.sse_clients,
            "deflate": point.deflate,
            "connected": connected,
            "connect_failed": result["connect_failed"],
            "connect_s": result["connect_s"],
            "connect_rate": result["connect_rate"],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "max_ms": result["max_ms"],
            "lost": result["lost"],
            "seq_gaps": result["seq_gaps"],
            "disconnects": result["disconnects"],
            "frames_received": result["frames"],
            "rss_idle_mb": idle_rss / 2**20,
            "rss_mb": end.server.rss_bytes / 2**20,
            "rss_kb_per_conn": (end.server.rss_bytes - idle_rss) / 1024 / connected
            if connected
            else None,
            "server_processes": end.server.processes,
            "server_cpu": (end.server.cpu_seconds - start.server.cpu_seconds) / seconds,
            "machine_cpu": (end.machine_busy - start.machine_busy) / seconds,
            "redis_cpu": None,
            "redis_cmds_per_tick": None,
            "redis_cmds_by_name": None,
            "broadcast_ms": None,
            "broadcast_ms_by_process": None,
            "frames_sent": None,
            "clients_by_process": None,
            "ticks": ticks,
            "window_s": seconds,
            "loadgen_cpu": result["loadgen_cpu"],
            "loadgen_cpu_connect": result["loadgen_cpu_connect"],
            "loadgen_loop_delay_p99_ms": result["loadgen_loop_delay_p99_ms"],
            "loadgen_loop_delay_max_ms": result["loadgen_loop_delay_max_ms"],
            "tick_latency_ms": result["tick_latency_ms"],
            "sse_events": result["sse_events"],
            "sse_failed": result["sse_failed"],
            "sse_burst_max_per_s": result["sse_burst_max_per_s"],
            "sse_final_delay_ms": result["sse_final_delay_ms"],
            "sse_final_missing": result["sse_final_missing"],
            "errors": result["errors"],
        }
        if start.redis is not None and end.redis is not None:
            row["redis_cpu"] = (
                end.redis.cpu_seconds - start.redis.cpu_seconds
            ) / seconds
            by_name = {
                name: (calls - start.redis_calls.get(name, 0)) / ticks
                for name, calls in end.redis_calls.items()
                if calls != start.redis_calls.get(name, 0)
            }
            row["redis_cmds_by_name"] = by_name
            row["redis_cmds_per_tick"] = sum(by_name.values())
        if point.config.kind == "reference":
            row.update(_reference_figures(start.reference, end.reference))
        else:
            row.update(_metrics_figures(start.metrics, end.metrics))
        # CPU of anything else on the machine, interrupt time of the loopback
        # traffic included: a large value means the figures were disturbed.
        row["other_cpu"] = (
            row["machine_cpu"]
            - row["server_cpu"]
            - (row["redis_cpu"] or 0.0)
            - row["loadgen_cpu"]
        )
        return row


def _reference_figures(
    start: dict[str, float], end: dict[str, float]
) -> dict[str, Any]:
    ticks = end["ticks"] - start["ticks"]
    seconds = end["broadcast_seconds_sum"] - start["broadcast_seconds_sum"]
    return {
        "broadcast_ms": 1000 * seconds / ticks if ticks else None,
        "frames_sent": end["frames_sent"] - start["frames_sent"],
        "clients_by_process": [end["connections"]],
    }


def _metrics_figures(
    start: dict[tuple[float, float], ProcessMetrics],
    end: dict[tuple[float, float], ProcessMetrics],
) -> dict[str, Any]:
    """Return broadcast time per tick and frames sent, from /metrics differences.

    Processes are matched by key; one seen at only one of the two markers is
    left out, and broadcast_ms_by_process then has fewer entries than there are
    server processes.
    """
    per_process = []
    total_seconds = 0.0
    total_broadcasts = 0.0
    frames_sent = 0.0
    for key, after in end.items():
        before = start.get(key)
        if before is None:
            continue
        broadcasts = after.broadcasts - before.broadcasts
        seconds = after.broadcast_seconds_sum - before.broadcast_seconds_sum
        total_seconds += seconds
        total_broadcasts += broadcasts
        frames_sent += after.frames_sent - before.frames_sent
        per_process.append(
            {
                "clients": after.active_connections,
                "broadcasts": broadcasts,
                "broadcast_ms": 1000 * seconds / broadcasts if broadcasts else None,
                "frames_dropped": after.frames_dropped - before.frames_dropped,
                "sse_clients": after.sse_clients,
            }
        )
    return {
        "broadcast_ms": 1000 * total_seconds / total_broadcasts
        if total_broadcasts
        else None,
        "broadcast_ms_by_process": per_process,
        "frames_sent": frames_sent,
        "clients_by_process": [entry["clients"] for entry in per_process],
    }
