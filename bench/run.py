"""Benchmark wordstream's servers against a minimal websockets broadcaster.

For each configuration, client count and deflate setting, start the server
(and a redis-server where it needs one), open the clients with the Node load
generator, measure a window of ticks, and stop everything again. Writes
bench/results/latest.json, latest.md and latest.png.

    python -m bench.run                      # what `make bench` runs
    python -m bench.run --sizes 1000 --configs serve-1,reference
"""

import argparse
import json
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.clients import LoadgenError, ensure_installed
from bench.measure import Measurement, Point
from bench.report import write_report
from bench.servers import migrated_database, parse_config

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CONFIGS = "serve-1,serve-2,runserver,reference"
DEFAULT_SIZES = "1000,5000,10000"
# Cores of other work on the machine (other processes, and interrupt time)
# above which a point is measured again, up to --attempts times in all.
DISTURBED_CPU = 0.25
# File descriptors: one per client, and a server or the load generator holds up
# to 11,000 clients.
OPEN_FILES = 20000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help="comma-separated: serve-N (N production server processes), "
        f"runserver, reference (default {DEFAULT_CONFIGS})",
    )
    parser.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help=f"WebSocket client counts, comma- or space-separated "
        f"(default {DEFAULT_SIZES})",
    )
    parser.add_argument(
        "--sse-clients",
        type=int,
        default=1000,
        help="SSE clients of the extra run beside --sse-beside WebSocket clients, "
        "made when that size is among the sizes; 0 skips it (default 1000)",
    )
    parser.add_argument(
        "--sse-beside",
        type=int,
        default=5000,
        help="WebSocket clients of the run with SSE clients (default 5000)",
    )
    parser.add_argument(
        "--deflate",
        default="off,on",
        help="whether the clients offer permessage-deflate: off, on or off,on "
        "(default off,on)",
    )
    parser.add_argument(
        "--ticks", type=int, default=60, help="ticks measured per point (default 60)"
    )
    parser.add_argument(
        "--sse-ticks",
        type=int,
        default=120,
        help="ticks measured per point at --sse-beside WebSocket clients, with "
        "and without the SSE clients, when the run with SSE clients is made "
        "(default 120)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds between words, the servers' WORD_INTERVAL (default 1.0)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS,
        help=f"folder for latest.json, latest.md and latest.png (default {RESULTS})",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        help="a Markdown file whose generated section is replaced with the "
        "results, when the run covered every default configuration and size",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help=f"measurements of a point disturbed by more than {DISTURBED_CPU} "
        "cores of other work, the least disturbed kept (default 3)",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for a quiet machine before each point (default 180)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip latest.png")
    return parser.parse_args(argv)


def split_list(text: str) -> list[str]:
    return [item for item in text.replace(",", " ").split() if item]


def build_points(options: argparse.Namespace) -> list[Point]:
    configs = [parse_config(name) for name in split_list(options.configs)]
    sizes = [int(size) for size in split_list(options.sizes)]
    deflate_modes = []
    for mode in split_list(options.deflate):
        if mode not in {"off", "on"}:
            raise ValueError(f"--deflate takes off, on or off,on, got {mode!r}")
        deflate_modes.append(mode == "on")
    # Size by size, each configuration in turn: the runs whose p99s the
    # report compares are minutes apart, not the length of a whole pass.
    return [
        Point(
            config,
            clients,
            sse,
            deflate,
            ticks,
            options.interval,
            options.quiet_timeout,
        )
        for deflate in deflate_modes
        for size in sizes
        for config in configs
        for clients, sse, ticks in size_runs(size, options)
        # The reference serves no event stream.
        if not (sse and config.kind == "reference")
    ]


def size_runs(size: int, options: argparse.Namespace) -> list[tuple[int, int, int]]:
    """Return (WebSocket clients, SSE clients, ticks) of each run of a config
    at one size.

    At --sse-beside clients the run with SSE clients comes right after the
    run without them, and both measure the longer window. So the two p99s
    differ by the streams' effect, not by the slowest few ticks of a short
    window or by a change in the machine's speed between distant runs.
    """
    if options.sse_clients and size == options.sse_beside:
        return [
            (size, 0, options.sse_ticks),
            (size, options.sse_clients, options.sse_ticks),
        ]
    return [(size, 0, options.ticks)]


def raise_open_file_limit(needed: int = OPEN_FILES, clients: int = 10000) -> None:
    """Raise the soft limit on open files, which the processes started inherit.

    needed is the limit that a run with `clients` clients needs.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < limit:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if limit < needed:
        print(
            f"warning: the open-file limit is {limit}, below the {needed} "
            f"that {clients:,} clients need",
            file=sys.stderr,
        )


def describe(point: Point) -> str:
    sse = f" + {point.sse_clients} SSE" if point.sse_clients else ""
    deflate = "on" if point.deflate else "off"
    return f"{point.config.name} {point.clients} WS{sse}, deflate {deflate}"


def summary(row: dict[str, Any]) -> str:
    broadcast = row["broadcast_ms"]
    return (
        f"connect {row['connect_s']:.2f} s, p50 {row['p50_ms']:.1f} ms, "
        f"p99 {row['p99_ms']:.1f} ms, max {row['max_ms']:.1f} ms, "
        f"lost {row['lost']}, {row['rss_kb_per_conn']:.1f} KB/conn, "
        f"CPU {row['server_cpu']:.2f}, broadcast "
        + (f"{broadcast:.1f} ms" if broadcast is not None else "n/a")
        + f", loadgen CPU {row['loadgen_cpu']:.3f}"
    )


def run_points(
    points: list[Point], workdir: Path, attempts: int
) -> list[dict[str, Any]]:
    database = migrated_database(workdir)
    rows: list[dict[str, Any]] = []
    for number, point in enumerate(points, start=1):
        label = f"[{number}/{len(points)}] {describe(point)}"

        def progress(message: str, label: str = label) -> None:
            print(f"{label}: {message}", file=sys.stderr, flush=True)

        rows.append(measure_point(point, workdir, database, attempts, progress))
    return rows


def measure_point(
    point: Point,
    workdir: Path,
    database: Path,
    attempts: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Measure point, again if other work on the machine disturbed it.

    Returns the least disturbed of at most `attempts` rows, with "disturbed"
    set if even that one saw more than DISTURBED_CPU cores of other work.
    """
    best: dict[str, Any] | None = None
    for attempt in range(1, max(attempts, 1) + 1):
        progress("starting" if attempt == 1 else f"starting attempt {attempt}")
        started = time.monotonic()
        row = Measurement(point, workdir, database).run(progress)
        row["attempts"] = attempt
        row["disturbed"] = row["other_cpu"] > DISTURBED_CPU
        progress(f"{summary(row)} ({time.monotonic() - started:.0f} s)")
        if best is None or row["other_cpu"] < best["other_cpu"]:
            best = row
        if not best["disturbed"]:
            break
        progress(f"other work used {row['other_cpu']:.2f} cores during the window")
    assert best is not None
    return best


def covers_defaults(options: argparse.Namespace) -> bool:
    """Return True if the run measured every default configuration and size."""
    return (
        set(split_list(DEFAULT_CONFIGS)) <= set(split_list(options.configs))
        and set(split_list(DEFAULT_SIZES)) <= set(split_list(options.sizes))
        and set(split_list(options.deflate)) == {"off", "on"}
        and options.sse_clients > 0
        and options.sse_beside == 5000
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        points = build_points(options)
        ensure_installed()
    except (ValueError, LoadgenError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    # SIGTERM, from `timeout` or a CI runner, exits through the finally blocks
    # that stop the servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="wordstream-bench-") as workdir:
        rows = run_points(points, Path(workdir), options.attempts)
    options.output.mkdir(parents=True, exist_ok=True)
    (options.output / "latest.json").write_text(json.dumps(rows, indent=1) + "\n")
    docs = options.docs if options.docs and covers_defaults(options) else None
    if options.docs and docs is None:
        print(
            f"bench: {options.docs} not updated, because the run did not cover "
            "every default configuration, size and deflate setting",
            file=sys.stderr,
        )
    write_report(rows, options, options.output, docs, plot=not options.no_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
