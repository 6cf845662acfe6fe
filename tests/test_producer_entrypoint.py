"""docker/producer/entrypoint.sh, which gives every producer container the
same DJANGO_SECRET_KEY."""

import os
import stat
import subprocess
import sys
from pathlib import Path

from .servers import ROOT

ENTRYPOINT = ROOT / "docker" / "producer" / "entrypoint.sh"
PRINT_KEY = ["sh", "-c", 'printf %s "$DJANGO_SECRET_KEY"']


def run_entrypoint(**env: str) -> subprocess.CompletedProcess:
    # The image's python is the interpreter running the tests here.
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    environment = {"PATH": path, **env}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *PRINT_KEY],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )


def test_key_file_created_once(tmp_path):
    key_file = tmp_path / "secret" / "django_secret_key"
    first = run_entrypoint(DJANGO_SECRET_KEY_FILE=str(key_file))
    second = run_entrypoint(DJANGO_SECRET_KEY_FILE=str(key_file))
    assert len(first.stdout) == 67
    assert second.stdout == first.stdout
    assert key_file.read_text() == first.stdout + "\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert os.listdir(key_file.parent) == ["django_secret_key"]


def test_key_from_environment_wins(tmp_path):
    key_file = tmp_path / "django_secret_key"
    result = run_entrypoint(
        DJANGO_SECRET_KEY="set-by-operator", DJANGO_SECRET_KEY_FILE=str(key_file)
    )
    assert result.stdout == "set-by-operator"
    assert not key_file.exists()


def test_no_key_file_leaves_key_unset():
    assert run_entrypoint().stdout == ""
