"""Real processes for the tests: redis-server and the project's servers, on free
ports of 127.0.0.1, each stopped by the fixture that started it."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# Seconds to wait for a process to become ready or to exit.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = ""):
    """Call predicate until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(message or f"condition not met within {timeout} s")
        time.sleep(interval)


class Process:
    """A child process whose output goes to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Process":
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send_signal(self, signum: int) -> None:
        if self.is_running():
            self.popen.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM) -> int | None:
        if self.popen is None:
            return None
        self.send_signal(signum)
        try:
            return self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(STOP_TIMEOUT)


class RedisServer(Process):
    def __init__(self, workdir: Path, port: int | None = None):
        self.port = port or free_port()
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
        super().__init__("redis", args, dict(os.environ), workdir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        super().start()
        wait_until(
            self._answers_ping, START_TIMEOUT, message="redis-server did not start"
        )
        return self

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class ServerProcess(Process):
    """An ASGI server running the project, reachable at base_url."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log: Path,
        port,
        host: str = "127.0.0.1",
    ):
        super().__init__(name, args, env, log)
        self.port = port
        self.host = host

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def start(self) -> "ServerProcess":
        super().start()
        wait_until(self._is_healthy, START_TIMEOUT, message=self._failure_message)
        return self

    def _failure_message(self) -> str:
        return f"{self.name} did not become healthy; log:\n{self.log()}"

    def _is_healthy(self) -> bool:
        if not self.is_running():
            raise RuntimeError(f"{self.name} exited early; log:\n{self.log()}")
        try:
            return httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def server_command(kind: str, port: int) -> list[str]:
    """Return the command line of a server of the given kind on port."""
    if kind == "uvicorn":
        return [
            PYTHON,
            "-m",
            "uvicorn",
            "wordstream_site.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws",
            "websockets-sansio",
            "--lifespan",
            "on",
            "--no-access-log",
        ]
    if kind == "daphne":
        return [
            PYTHON,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "wordstream_site.asgi:application",
        ]
    if kind == "serve":
        # The production server reads HOST and PORT from the environment.
        return [PYTHON, "-m", "wordstream_site.serve"]
    if kind == "runserver":
        return [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}"]
    raise ValueError(f"unknown server kind {kind!r}")
