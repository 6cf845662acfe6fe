"""The production server's start with invalid settings in its environment."""

import os
import subprocess

import pytest

from .servers import PYTHON, ROOT


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORT", "abc", "PORT must be a whole number, got 'abc'"),
        ("PORT", "70000", "PORT must be at least 0 and at most 65535, got '70000'"),
        ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY must be at least 1, got '0'"),
        ("WS_MAX_BACKLOG", "many", "WS_MAX_BACKLOG must be a whole number"),
        ("WS_PING_INTERVAL", "-1", "WS_PING_INTERVAL must be greater than 0"),
        ("LOG_LEVEL", "verbose", "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR"),
    ],
)
def test_invalid_setting_stops_server_start(variable, value, message):
    env = {**os.environ, "DJANGO_DEVELOPMENT": "1", variable: value}
    result = subprocess.run(
        [PYTHON, "-m", "wordstream_site.serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"cannot start the server: {message}" in result.stderr
    assert "Traceback" not in result.stderr
