"""Runs the load generators (bench/loadgen/loadgen.mjs, with its C WebSocket
clients, and recovery.mjs for the reconnect burst) and reads their events, one
JSON object per line of their output."""

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Protocol

LOADGEN_DIR = Path(__file__).resolve().parent / "loadgen"
LOADGEN = LOADGEN_DIR / "loadgen.mjs"
RECOVERY_LOADGEN = LOADGEN_DIR / "recovery.mjs"
WS_CLIENTS_SOURCE = LOADGEN_DIR / "wsclients.c"
WS_CLIENTS = LOADGEN_DIR / "build" / "wsclients"


class LoadgenError(RuntimeError):
    pass


class LoadgenRun(Protocol):
    """The command line of one load generator run and its time limit."""

    def args(self) -> list[str]: ...

    def time_limit(self) -> float: ...


# recovery.mjs receives frames in node. A young generation of 64 MB, against
# node's default of 16 MB, has room for the garbage of a tick, so node seldom
# stops for a collection while frames arrive: a pause delays the frames that
# arrive during it. At 5,000 clients the default's pauses added up to 250 ms
# in 60 ticks, and 35 ms with this one.
NODE_FLAGS = ("--max-semi-space-size=64",)


def node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        raise LoadgenError("node is not installed: the load generator needs Node 20")
    return [node, *NODE_FLAGS]


@dataclass
class LoadSpec:
    """What one load generator run opens and measures."""

    ws_url: str
    clients: int
    sse_clients: int
    deflate: bool
    ticks: int
    interval: float
    settle: float = 2.0
    max_pending: int = 1000

    def args(self) -> list[str]:
        args = [
            *node_command(),
            str(LOADGEN),
            "--url",
            self.ws_url,
            "--clients",
            str(self.clients),
            "--sse-clients",
            str(self.sse_clients),
            "--ticks",
            str(self.ticks),
            "--interval",
            str(self.interval),
            "--settle",
            str(self.settle),
            "--max-pending",
            str(self.max_pending),
            "--wait-ack",
        ]
        if self.deflate:
            args.append("--deflate")
        return args

    def time_limit(self) -> float:
        """Seconds after which a run that has not finished is stopped."""
        return 300.0 + (self.ticks + 10) * self.interval


@dataclass
class RecoverySpec:
    """The options of one run of the reconnect-burst load generator."""

    ws_url: str
    live: int
    recovering: int
    # Ticks of the live clients' baseline, and ticks the recovering clients miss.
    ticks: int
    missed_ticks: int
    interval: float
    settle: float = 2.0
    max_pending: int = 1000
    # Seconds the recovery may take before it counts as incomplete.
    recovery_timeout: float = 30.0

    def args(self) -> list[str]:
        return [
            *node_command(),
            str(RECOVERY_LOADGEN),
            "--url",
            self.ws_url,
            "--live",
            str(self.live),
            "--recovering",
            str(self.recovering),
            "--ticks",
            str(self.ticks),
            "--missed-ticks",
            str(self.missed_ticks),
            "--interval",
            str(self.interval),
            "--settle",
            str(self.settle),
            "--max-pending",
            str(self.max_pending),
            "--recovery-timeout",
            str(self.recovery_timeout),
        ]

    def time_limit(self) -> float:
        """Seconds without output after which the run is stopped."""
        ticks = self.ticks + self.missed_ticks
        return 300.0 + self.recovery_timeout + ticks * self.interval


def ensure_installed() -> None:
    """Raise LoadgenError unless `npm ci` has installed the ws package.

    Also build the WebSocket clients from wsclients.c when they are missing
    or older than their source.
    """
    if not (LOADGEN_DIR / "node_modules" / "ws").is_dir():
        raise LoadgenError(
            f"the load generator's packages are missing: run `npm ci` in {LOADGEN_DIR}"
        )
    if (
        not WS_CLIENTS.exists()
        or WS_CLIENTS.stat().st_mtime < WS_CLIENTS_SOURCE.stat().st_mtime
    ):
        build_ws_clients()


def build_ws_clients() -> None:
    """Compile wsclients.c with the C compiler and zlib."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise LoadgenError("no C compiler: install gcc to build the WebSocket clients")
    WS_CLIENTS.parent.mkdir(exist_ok=True)
    built = subprocess.run(
        [
            compiler,
            "-O2",
            "-Wall",
            "-o",
            str(WS_CLIENTS),
            str(WS_CLIENTS_SOURCE),
            "-lz",
        ],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        raise LoadgenError(
            f"building {WS_CLIENTS_SOURCE.name} failed (it needs gcc and "
            f"zlib1g-dev): {built.stderr.strip()}"
        )


def run_loadgen(
    spec: LoadgenRun, on_event: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Run the load generator, call on_event for each event, return the result.

    on_event runs in this thread while the load generator goes on. The load
    generator keeps its clients open after window_end until on_event has
    returned for it.
    """
    ensure_installed()
    process = subprocess.Popen(
        spec.args(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NODE_ENV": "production"},
    )
    assert process.stdin and process.stdout and process.stderr
    lines: Queue[str | None] = Queue()
    reader = threading.Thread(
        target=_read_lines, args=(process.stdout, lines), daemon=True
    )
    reader.start()
    result = None
    try:
        for line in _lines_until(lines, spec.time_limit()):
            event = json.loads(line)
            if event["event"] == "result":
                result = event
            on_event(event)
            if event["event"] == "window_end":
                process.stdin.write("sampled\n")
                process.stdin.flush()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    errors = process.stderr.read()
    if result is None:
        raise LoadgenError(
            f"the load generator exited with {process.returncode} and no result: "
            f"{errors.strip()}"
        )
    return result


def _read_lines(stream: Any, lines: "Queue[str | None]") -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _lines_until(lines: "Queue[str | None]", seconds: float) -> Iterator[str]:
    try:
        while (line := lines.get(timeout=seconds)) is not None:
            yield line
    except Empty:
        raise LoadgenError(
            f"the load generator wrote nothing for {seconds:.0f} s"
        ) from None
