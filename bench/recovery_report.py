"""The reconnect-burst benchmark's report: its figures, its targets and the
machine, written to bench/results/recovery.json and recovery.md and into the
recovery section of a doc."""

import argparse
import json
from pathlib import Path
from typing import Any

from bench.report import _number, machine_info, machine_section, replace_generated

DOCS_BEGIN = "<!-- bench-recovery:begin -->"
DOCS_END = "<!-- bench-recovery:end -->"
# The targets: every recovering client has its notice and missed words within
# this many seconds of the first reconnect attempt, and the live clients' p99
# during the recovery is at most this multiple of their p99 before the burst.
RECOVERY_LIMIT_S = 2.0
P99_RATIO_LIMIT = 1.2

Row = dict[str, Any]
Check = tuple[str, str, str]


def target_checks(row: Row) -> list[Check]:
    """Evaluate the two targets of the reconnect burst on one run."""
    recovering = row["recovering"]
    seconds = row["recovery_s"]
    in_time = seconds is not None and seconds <= RECOVERY_LIMIT_S
    took = f"{seconds:.2f} s" if seconds is not None else "no client recovered"
    recovery = (
        f"{recovering:,} clients recovered exactly within {RECOVERY_LIMIT_S:g} s",
        "met" if row["recovery_complete"] and in_time else "missed",
        f"{row['exact']:,} of {recovering:,} exact, the last after {took}",
    )
    ratio = row["p99_ratio"]
    label = (
        f"live p99 during the recovery within {P99_RATIO_LIMIT:g}x of before, "
        f"{row['live']:,} live clients"
    )
    if ratio is None:
        return [recovery, (label, "n/a", "not measured")]
    evidence = (
        f"{row['during']['p99_ms']:.1f} / {row['baseline']['p99_ms']:.1f} = "
        f"{ratio:.2f}x (limit {P99_RATIO_LIMIT:g}x)"
    )
    latency = (label, "met" if ratio <= P99_RATIO_LIMIT else "missed", evidence)
    return [recovery, latency]


def command_line(options: argparse.Namespace) -> str:
    return (
        f"python -m bench.recovery --live {options.live} "
        f"--recovering {options.recovering} --missed-ticks {options.missed_ticks} "
        f"--ticks {options.ticks} --interval {options.interval} "
        f"--settle {options.settle:g} --attempts {options.attempts} "
        f"--quiet-timeout {options.quiet_timeout:g}"
    )


def _latencies(figures: dict[str, Any]) -> str:
    return (
        f"{_number(figures['p50_ms'])} / {_number(figures['p99_ms'])} / "
        f"{_number(figures['max_ms'])} ms"
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {count:,}" for name, count in counts.items()) or "none"


def _seconds(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "n/a"


def figures_table(row: Row) -> str:
    """Return the run's figures as a Markdown table of two columns."""
    baseline = row["baseline"]
    during = row["during"]
    recovering = row["recovering"]
    min_words, max_words = row["missed_words_min"], row["missed_words_max"]
    if min_words is None:
        words = "n/a"
    elif min_words == max_words:
        words = str(min_words)
    else:
        words = f"{min_words} to {max_words}"
    figures = [
        (
            "clients",
            f"{row['live']:,} live + {recovering:,} recovering, "
            f"{row['connected']:,} connected in {row['connect_s']:.2f} s",
        ),
        (
            "recovering clients closed, then reconnected",
            f"{row['recovering_closed']:,}, then {row['reconnected']:,} "
            f"({row['reconnect_failed']:,} failed, {row['reconnect_retries']:,} "
            f"retries, handshakes done after {row['reconnect_s']:.2f} s)",
        ),
        (
            "missed ticks, and missed words a notice announced",
            f"{row['missed_ticks']}, {words}",
        ),
        (
            "recovery time: first reconnect attempt to the last client "
            "with its notice and every missed word",
            _seconds(row["recovery_s"]),
        ),
        (
            "the same per client: p50 / p99 / max",
            f"{_seconds(row['recovery_p50_s'])} / {_seconds(row['recovery_p99_s'])}"
            f" / {_seconds(row['recovery_max_s'])}",
        ),
        ("notices with recovered: true", f"{row['recovered_true']:,}"),
        ("notices with recovered: false, by reason", _counts(row["not_recovered"])),
        (
            "exact: the missed seqs in order, then the live stream with no gap "
            "or duplicate",
            f"{row['exact']:,} of {recovering:,}",
        ),
        ("deviations, by the first one of each client", _counts(row["problems"])),
        (
            f"live p50 / p99 / max before, ticks {baseline['first_seq']} to "
            f"{baseline['last_seq']}",
            _latencies(baseline),
        ),
        (
            f"live p50 / p99 / max from the reconnect until the recovery "
            f"completed plus one tick, ticks {during['first_seq']} to "
            f"{during['last_seq']}",
            _latencies(during),
        ),
        ("live p99, during / before", _number(row["p99_ratio"], 2) + "x"),
        ("live frames lost, before to the last tick", f"{row['live_lost']:,}"),
        (
            "loadgen CPU, before / during, in cores",
            f"{row['loadgen_cpu_baseline']:.3f} / {row['loadgen_cpu_recovery']:.3f}",
        ),
        (
            "loadgen event loop delay p99, before / during",
            f"{row['loadgen_loop_delay_p99_ms_baseline']:.1f} / "
            f"{row['loadgen_loop_delay_p99_ms_recovery']:.1f} ms",
        ),
        (
            "server CPU, before / during, in cores",
            f"{row['server_cpu_baseline']:.2f} / {row['server_cpu_recovery']:.2f}",
        ),
        (
            "other CPU, before / during, in cores",
            f"{row['other_cpu_baseline']:.2f} / {row['other_cpu_recovery']:.2f}"
            + (" (disturbed)" if row["disturbed"] else ""),
        ),
    ]
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in figures]
    return "\n".join(lines)


def markdown(row: Row, options: argparse.Namespace, machine: dict[str, str]) -> str:
    lines = [
        f"Command: `{command_line(options)}`, in `make bench` and "
        "`make bench-recovery`.",
        "",
        figures_table(row),
        "",
        "Targets, computed by bench/recovery_report.py from this run:",
        "",
        "| target | result | evidence |",
        "|---|---|---|",
    ]
    lines += [
        f"| {label} | {verdict} | {evidence} |"
        for label, verdict, evidence in row["targets"]
    ]
    lines += [
        "",
        "Machine:",
        "",
        "- busy cores in the second before the clients connected: "
        f"{row['busy_cores_before']:.2f}",
        f"- load average (1 min) at that moment: {row['load_average_1m']:.2f}"
        + (", which includes the earlier attempts" if row["attempts"] > 1 else ""),
        machine_section(machine),
        "",
    ]
    return "\n".join(lines)


def write_recovery_report(
    row: Row, options: argparse.Namespace, output: Path, docs: Path | None
) -> None:
    """Write recovery.json and recovery.md to output, and the doc's section."""
    row["command"] = command_line(options)
    row["targets"] = target_checks(row)
    machine = machine_info()
    row["machine"] = machine
    (output / "recovery.json").write_text(json.dumps(row, indent=1) + "\n")
    text = markdown(row, options, machine)
    (output / "recovery.md").write_text(text)
    if docs is not None:
        replace_generated(docs, text, DOCS_BEGIN, DOCS_END)
