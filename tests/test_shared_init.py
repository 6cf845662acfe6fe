"""docker/shared-init/sync.sh, which fills the shared_web volume from shared/."""

import os
import stat
import subprocess

from .proxies import SYNC_SCRIPT


def run_sync(source, destination) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(SYNC_SCRIPT), str(source), str(destination)],
        capture_output=True,
        text=True,
    )


def tree(root) -> dict[str, bytes | None]:
    """Map each path under root to its bytes, or None for a folder."""
    entries = {}
    for folder, folders, files in os.walk(root):
        for name in folders:
            entries[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as file:
                entries[os.path.relpath(path, root)] = file.read()
    return entries


def test_sync_copies_and_deletes(tmp_path):
    source = tmp_path / "shared"
    (source / "icons").mkdir(parents=True)
    (source / "index.html").write_bytes(b"<!doctype html>\n")
    (source / "icons" / "logo.svg").write_bytes(b"<svg/>")
    (source / "style.css").write_bytes(b"body {}\n")
    destination = tmp_path / "volume"
    (destination / "old" / "deep").mkdir(parents=True)
    (destination / "old" / "deep" / "gone.js").write_bytes(b"stale")
    (destination / "index.html").write_bytes(b"previous page")
    # A folder where shared/ now has a file, and a file where it has a folder.
    (destination / "style.css").mkdir()
    (destination / "icons").write_bytes(b"not a folder")

    result = run_sync(source, destination)

    assert result.returncode == 0, result.stderr
    assert tree(destination) == tree(source)
    assert sorted(result.stdout.splitlines()) == [
        "copied icons/logo.svg",
        "copied index.html",
        "copied style.css",
        "removed icons",
        "removed old",
        "removed old/deep",
        "removed old/deep/gone.js",
        "removed style.css",
    ]


def test_sync_again_changes_only_changed_files(tmp_path):
    source = tmp_path / "shared"
    source.mkdir()
    (source / "index.html").write_bytes(b"one")
    (source / "app.js").write_bytes(b"let a;\n")
    destination = tmp_path / "volume"
    assert run_sync(source, destination).returncode == 0
    unchanged_inode = (destination / "app.js").stat().st_ino

    (source / "index.html").write_bytes(b"two")
    (source / "app.js").chmod(0o444)
    (source / "index.html").chmod(0o400)
    result = run_sync(source, destination)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["copied index.html"]
    assert (destination / "index.html").read_bytes() == b"two"
    assert (destination / "app.js").stat().st_ino == unchanged_inode
    # The proxies' users read the files, whatever the source's mode.
    mode = (destination / "index.html").stat().st_mode
    assert mode & stat.S_IROTH
    assert run_sync(source, destination).stdout == ""


def test_sync_rejects_missing_source(tmp_path):
    result = run_sync(tmp_path / "missing", tmp_path / "volume")
    assert result.returncode == 1
    assert (
        result.stderr == f"sync.sh: source folder not found: {tmp_path / 'missing'}\n"
    )
    assert not (tmp_path / "volume").exists()


def test_sync_requires_two_arguments(tmp_path):
    result = subprocess.run(
        ["sh", str(SYNC_SCRIPT), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == "usage: sync.sh SRC DEST\n"
