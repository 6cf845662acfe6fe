"""A minimal word broadcaster on the websockets library alone: the reference.

One process and the standard asyncio event loop. Once per interval it sends
`{"word", "seq", "ts"}` to every open connection with websockets.broadcast()
and times that call. GET /stats returns the counters as JSON, and the process
prints them to stderr when it stops.

    python bench/reference_server.py --port 8765 --interval 1.0
"""

import argparse
import asyncio
import json
import logging
import random
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

logger = logging.getLogger("reference")

# The same listen backlog as the production server (wordstream_site/serve.py),
# so that connect times compare the servers' handshakes, not their backlogs.
BACKLOG = 4096
WORDS = ("harbour", "lantern", "meadow", "orbit", "quartz", "saddle", "tundra")


@dataclass
class Stats:
    ticks: int = 0
    frames_sent: int = 0
    connections: int = 0
    broadcast_seconds_sum: float = 0.0
    broadcast_seconds_max: float = 0.0


def raise_open_file_limit() -> None:
    """Raise the soft limit on open files to the hard limit: one per client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tick(server_connections: set[ServerConnection], stats: Stats) -> None:
    """Send one frame to every open connection, and time the broadcast() call."""
    stats.ticks += 1
    frame = json.dumps(
        {
            "word": random.choice(WORDS),
            "seq": stats.ticks,
            "ts": int(time.time() * 1000),
        }
    )
    started = time.perf_counter()
    broadcast(server_connections, frame)
    duration = time.perf_counter() - started
    stats.broadcast_seconds_sum += duration
    stats.broadcast_seconds_max = max(stats.broadcast_seconds_max, duration)
    stats.connections = len(server_connections)
    stats.frames_sent += stats.connections


async def run_ticks(
    server_connections: set[ServerConnection], stats: Stats, interval: float
) -> None:
    """Tick every interval; tick n is due n intervals after the first, so no drift."""
    loop = asyncio.get_running_loop()
    first = loop.time()
    while True:
        due = first + stats.ticks * interval
        await asyncio.sleep(max(0.0, due - loop.time()))
        tick(server_connections, stats)


async def main(host: str, port: int, interval: float) -> None:
    stats = Stats()
    open_connections: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        open_connections.add(connection)
        try:
            await connection.wait_closed()
        finally:
            open_connections.discard(connection)

    def process_request(
        connection: ServerConnection, request: Request
    ) -> Response | None:
        if request.path == "/stats":
            body = json.dumps(asdict(stats)).encode()
            headers = Headers({"Content-Type": "application/json"})
            return Response(HTTPStatus.OK, "OK", headers, body)
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(
        handler, host, port, process_request=process_request, backlog=BACKLOG
    ):
        logger.info("reference server on %s:%d, interval %.3f s", host, port, interval)
        ticks = asyncio.create_task(run_ticks(open_connections, stats, interval))
        try:
            await stop
        finally:
            ticks.cancel()
    print(json.dumps(asdict(stats)), file=sys.stderr)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between two words"
    )
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # websockets logs every connection at INFO, which a server of 10,000
    # clients would not do in production.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    options = parse_args()
    raise_open_file_limit()
    asyncio.run(main(options.host, options.port, options.interval))
