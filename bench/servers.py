"""The processes under test: redis-server, the project's servers and the
reference, each on a free port of 127.0.0.1 and stopped by the benchmark."""

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.probes import descendants

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# Seconds to wait for a process to answer, and for one to exit.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# prctl's option that sets the signal a process gets when its parent exits
# (linux/prctl.h).
PR_SET_PDEATHSIG = 1
# The secret key of the benchmark's production runs: any value but the public
# development key passes the production server's settings check.
BENCH_SECRET_KEY = "wordstream-benchmark-not-a-deployment-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Config:
    """One configuration under test.

    kind is "serve" (python -m wordstream_site.serve with Redis), "runserver"
    (manage.py runserver, no Redis) or "reference" (bench/reference_server.py).
    """

    name: str
    kind: str
    processes: int = 1

    @property
    def uses_redis(self) -> bool:
        return self.kind == "serve"


def parse_config(name: str) -> Config:
    """Return the configuration called name: serve-N, runserver or reference."""
    if name in {"runserver", "reference"}:
        return Config(name, name)
    kind, _, count = name.partition("-")
    if kind == "serve" and count.isdigit() and int(count) >= 1:
        return Config(name, "serve", int(count))
    raise ValueError(
        f"unknown configuration {name!r}: expected serve-N (N server processes), "
        "runserver or reference"
    )


class Process:
    """A child process whose output goes to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_terminate_with_parent,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Send SIGTERM to the process and to every process it started.

        Its children are signalled by pid as well, because the runserver
        autoreloader's parent exits on SIGTERM without stopping its child.
        """
        if self.popen is None:
            return
        children = descendants(self.popen.pid)
        if self.is_running():
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        for pid in children:
            _signal_pid(pid, signal.SIGTERM)
        for pid in children:
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid):
                _signal_pid(pid, signal.SIGKILL)


def _terminate_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the benchmark dies.

    Runs in the child between fork and exec. Without it, a benchmark killed
    with SIGKILL, as subprocess.run's timeout does, leaves its servers running.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_pid(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; its state in /proc says it has exited.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until_ready(process: Process, url: str) -> None:
    """Poll url until it answers 200; raise RuntimeError if the process exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not process.is_running():
            raise RuntimeError(
                f"{process.name} exited early; log:\n{process.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"{process.name} did not answer {url} within {START_TIMEOUT} s; "
        f"log:\n{process.log_tail()}"
    )


class RedisServer(Process):
    """A redis-server without persistence, for one measurement."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ]
        super().__init__("redis-server", args, dict(os.environ), workdir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers_ping():
            if time.monotonic() > deadline or not self.is_running():
                raise RuntimeError(f"redis-server did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class ServerUnderTest(Process):
    """A server of one configuration, listening on port."""

    def __init__(
        self,
        config: Config,
        workdir: Path,
        interval: float,
        database_url: str,
        redis_url: str = "",
    ) -> None:
        self.config = config
        self.port = free_port()
        args, env = self._command(config, interval, database_url, redis_url)
        log = workdir / f"{config.name}-{self.port}.log"
        super().__init__(config.name, args, env, log)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        super().start()
        wait_until_ready(self, self.base_url + "/healthz")

    def _command(
        self, config: Config, interval: float, database_url: str, redis_url: str
    ) -> tuple[list[str], dict[str, str]]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "WS_", "REDIS_", "WEB_"))
        }
        env.update(
            PYTHONUNBUFFERED="1",
            WORD_INTERVAL=str(interval),
            DATABASE_URL=database_url,
            HOST="127.0.0.1",
            PORT=str(self.port),
        )
        if config.kind == "serve":
            env.update(
                DJANGO_DEBUG="0",
                DJANGO_SECRET_KEY=BENCH_SECRET_KEY,
                REDIS_URL=redis_url,
                WEB_CONCURRENCY=str(config.processes),
            )
            return [PYTHON, "-m", "wordstream_site.serve"], env
        if config.kind == "runserver":
            # As `make run` starts it: DEBUG on and the autoreloader.
            return [PYTHON, "manage.py", "runserver", f"127.0.0.1:{self.port}"], env
        if config.kind == "reference":
            args = [
                PYTHON,
                str(ROOT / "bench" / "reference_server.py"),
                "--port",
                str(self.port),
                "--interval",
                str(interval),
            ]
            return args, env
        raise ValueError(f"unknown configuration kind {config.kind!r}")


def migrated_database(workdir: Path) -> Path:
    """Create a migrated SQLite database to copy for each server."""
    path = workdir / "template.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{path}"}
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--no-input", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return path
