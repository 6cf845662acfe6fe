"""Run the production server: uvicorn, configured from the environment.

`make serve` and the Docker image both start the server with
`python -m wordstream_site.serve`, so they run the same command with the
same options. Environment: HOST (127.0.0.1), PORT (8000), WEB_CONCURRENCY
(server processes, 1), and the Django settings' variables.
"""

import gc
import logging
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

import uvicorn
from django.core.exceptions import ImproperlyConfigured

from .protocol import HTTPProtocol, WebSocketProtocol

# Named, because `python -m` runs this module as __main__, a logger that the
# settings' LOGGING would leave at the root's WARNING level.
logger = logging.getLogger("wordstream_site.serve")

# Connections the kernel queues while the server accepts: thousands of
# clients reconnecting at once overflow a short backlog (daphne's is 50).
BACKLOG = 4096

# The collector's thresholds per generation: Python's defaults for the two
# young ones, and full collections a hundred times rarer than by default. A
# full collection walks every live object, and each connection has about a
# hundred. Opening 10,000 connections with the defaults took 10 full
# collections: 2.6 s in all, up to 0.65 s each with the event loop stopped.
# With these thresholds and the startup objects frozen, it took none.
GC_THRESHOLDS = (700, 10, 1000)


def check_production_settings() -> None:
    """Raise ImproperlyConfigured for settings that must not reach production.

    DJANGO_DEVELOPMENT=1 declares a development run, which allows both.
    """
    from django.conf import settings

    from .settings import DEVELOPMENT_SECRET_KEY, env_bool

    if env_bool("DJANGO_DEVELOPMENT", False):
        return
    if settings.DEBUG:
        raise ImproperlyConfigured(
            "DEBUG is on: set DJANGO_DEBUG=0, or DJANGO_DEVELOPMENT=1 for a "
            "development run"
        )
    if settings.SECRET_KEY == DEVELOPMENT_SECRET_KEY:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is the public development key: set a secret "
            "one, or DJANGO_DEVELOPMENT=1 for a development run"
        )


def server_options() -> dict[str, Any]:
    """Return uvicorn's options, read from the environment and the settings."""
    from django.conf import settings

    from .settings import env_int

    workers = env_int("WEB_CONCURRENCY", 1, minimum=1)
    if workers > 1 and not settings.REDIS_URL:
        raise ImproperlyConfigured(
            f"WEB_CONCURRENCY={workers} needs REDIS_URL: without Redis each "
            "process would stream and count on its own"
        )
    return {
        "host": os.environ.get("HOST", "127.0.0.1"),
        "port": env_int("PORT", 8000, minimum=0, maximum=65535),
        "workers": workers,
        # uvicorn's sans-I/O websockets protocol costs the least memory and
        # time per connection of its implementations; this subclass of it
        # keeps less per connection still.
        "ws": WebSocketProtocol,
        "http": HTTPProtocol,
        # A word frame is about 80 bytes: compression saves nothing and costs
        # about three times the memory per connection.
        "ws_per_message_deflate": False,
        "ws_max_size": settings.WS_MAX_MESSAGE_SIZE,
        "ws_ping_interval": settings.WS_PING_INTERVAL,
        "ws_ping_timeout": settings.WS_PING_TIMEOUT,
        "lifespan": "on",
        "backlog": BACKLOG,
        "access_log": False,
        # uvicorn logs two INFO lines per WebSocket connection, which cost
        # about 5% of the handshake time. This server logs its own start and
        # stop, and uvicorn's warnings and errors still show.
        "log_level": "warning",
        # streaming.proxy reads X-Forwarded-For itself. uvicorn's rewrite of
        # the client address would hide the proxy's own address, which
        # X-Wordstream-Via is checked against.
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
    }


class Server(uvicorn.Server):
    """uvicorn's server, closing WebSocket clients with 1001 on shutdown.

    uvicorn would close them with 1012 (service restart) and wait for the
    event streams, which never end by themselves.

    NOTE: a client whose socket buffer is full when the server stops still
    gets 1012: the 1001 close waits for the buffer to drain, and uvicorn
    closes the connection first.
    """

    async def shutdown(self, sockets: Any = None) -> None:
        from streaming.closecodes import CloseCode
        from streaming.services import services

        await services.close_clients(CloseCode.GOING_AWAY)
        await super().shutdown(sockets)


def tune_garbage_collector() -> None:
    """Freeze the objects alive after startup and make full collections rare.

    Frozen objects, such as Django's modules and settings, are never walked
    again; forked server processes also leave their pages shared.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(options: dict[str, Any]) -> None:
    config = uvicorn.Config("wordstream_site.asgi:application", **options)
    config.load()
    tune_garbage_collector()
    if config.workers > 1:
        Supervisor(config).run()
    else:
        try:
            Server(config).run()
        except KeyboardInterrupt:
            # uvicorn raises SIGINT again once it has shut down, and Python's
            # handler turns it into this exception. End by the signal, as
            # Python does, but without the traceback.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Supervisor:
    """Runs config.workers server processes on one listening socket.

    uvicorn's own supervisor always runs its stock server class, so this one
    forks the processes itself. Each runs Server on the socket bound here. A
    process that dies is started again. SIGINT or SIGTERM stops every
    process with SIGTERM: a terminal's Ctrl-C also reaches them directly,
    and a second SIGINT would make uvicorn skip its graceful shutdown.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        self.config = config
        self.socket = config.bind_socket()
        self.context = multiprocessing.get_context("fork")
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.stopping = False

    def run(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._forward)
        for _ in range(self.config.workers):
            self._start_process(len(self.processes))
        logger.info("started %d server processes", len(self.processes))
        while not self.stopping:
            self._restart_dead()
            time.sleep(0.5)
        for process in self.processes:
            process.join()
        logger.info("server processes stopped")

    def _start_process(self, index: int) -> None:
        """Start a server process as processes[index].

        The stop signals stay blocked until the process is in the list, so
        _forward() reaches every process it can see, and the child unblocks
        them only once it has its own handlers.
        """
        server = Server(self.config)
        process = self.context.Process(
            target=run_server_process, args=(server, [self.socket])
        )
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
            if index < len(self.processes):
                self.processes[index] = process
            else:
                self.processes.append(process)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _restart_dead(self) -> None:
        for index, process in enumerate(self.processes):
            if not process.is_alive() and not self.stopping:
                logger.error(
                    "server process %s exited with %s; starting another",
                    process.pid,
                    process.exitcode,
                )
                self._start_process(index)

    def _forward(self, signum: int, frame: Any) -> None:
        self.stopping = True
        for process in self.processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)


def run_server_process(server: Server, sockets: list[Any]) -> None:
    """Run one forked server process.

    The fork copies the supervisor's handlers for SIGINT and SIGTERM, with
    both blocked: the defaults come back before they are unblocked, and
    uvicorn then installs its own.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    server.run(sockets)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wordstream_site.settings")
    import django

    try:
        django.setup()
        check_production_settings()
        options = server_options()
    except (ImproperlyConfigured, ValueError) as exc:
        sys.exit(f"cannot start the server: {exc}")
    logger.info("starting uvicorn on %s:%s", options["host"], options["port"])
    run(options)


if __name__ == "__main__":
    main()
