"""The report's verdicts on the SSE clients' count events during a burst."""

import pytest

from bench.report import _burst_checks


def burst_row(max_per_second: int | None, delay_ms: float | None, missing: int) -> dict:
    return {
        "sse_burst_max_per_s": max_per_second,
        "sse_final_delay_ms": delay_ms,
        "sse_final_missing": missing,
    }


def verdicts(row: dict | None) -> list[str]:
    return [verdict for _, verdict, _ in _burst_checks(row, "serve-1")]


def test_burst_within_limits_is_met():
    assert verdicts(burst_row(11, 200.0, 0)) == ["met", "met"]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (burst_row(12, 150.0, 0), ["missed", "met"]),
        (burst_row(10, 201.0, 0), ["met", "missed"]),
        (burst_row(10, 150.0, 1), ["met", "missed"]),
        (burst_row(10, None, 1000), ["met", "missed"]),
    ],
)
def test_burst_over_a_limit_is_missed(row, expected):
    assert verdicts(row) == expected


def test_burst_without_figures_has_no_checks():
    assert verdicts(None) == []
    assert verdicts(burst_row(None, None, 0)) == []
