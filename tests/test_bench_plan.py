"""The points a benchmark run measures, and in which order."""

from bench.run import build_points, parse_args


def plan(*args: str) -> list[tuple[str, int, int, int]]:
    points = build_points(parse_args(["--deflate", "off", *args]))
    return [
        (point.config.name, point.clients, point.sse_clients, point.ticks)
        for point in points
    ]


def test_sse_run_follows_its_baseline():
    points = plan(
        "--configs",
        "serve-1,reference",
        "--sizes",
        "1000,5000,10000",
        "--ticks",
        "30",
        "--sse-ticks",
        "120",
    )
    assert points == [
        ("serve-1", 1000, 0, 30),
        ("reference", 1000, 0, 30),
        ("serve-1", 5000, 0, 120),
        ("serve-1", 5000, 1000, 120),
        ("reference", 5000, 0, 120),
        ("serve-1", 10000, 0, 30),
        ("reference", 10000, 0, 30),
    ]


def test_other_sizes_measure_short_window():
    points = plan("--configs", "serve-2", "--sizes", "1000", "--ticks", "15")
    assert points == [("serve-2", 1000, 0, 15)]


def test_no_sse_clients_one_run_per_size():
    points = plan("--configs", "serve-1", "--sizes", "5000", "--sse-clients", "0")
    assert points == [("serve-1", 5000, 0, 60)]


def test_each_deflate_mode_runs_size_by_size():
    points = build_points(
        parse_args(
            [
                "--configs",
                "serve-1,serve-2",
                "--sizes",
                "1000,10000",
                "--deflate",
                "off,on",
            ]
        )
    )
    assert [(p.deflate, p.clients, p.config.name) for p in points] == [
        (False, 1000, "serve-1"),
        (False, 1000, "serve-2"),
        (False, 10000, "serve-1"),
        (False, 10000, "serve-2"),
        (True, 1000, "serve-1"),
        (True, 1000, "serve-2"),
        (True, 10000, "serve-1"),
        (True, 10000, "serve-2"),
    ]
