"""The background work of one server process, started and stopped as a unit.

Every server process runs the relay, the presence reports and the connection
recorder. It also runs a word source candidate unless IN_PROCESS_WORD_SOURCE
is off; `manage.py broadcast_words` runs one as a process of its own.
"""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError

from .closecodes import CloseCode
from .fanout import Fanout
from .history import History
from .leadership import new_process_id
from .presence import REPORT_INTERVAL, Presence
from .recorder import ConnectionRecorder, mark_lost
from .relay import Relay
from .source import WordSource, build_history, build_word_source

logger = logging.getLogger(__name__)

# Seconds stop() waits for the cancelled background tasks.
STOP_TIMEOUT = 5.0


class Services:
    """The relay, presence, recorder and word source of this process.

    start() and stop() may each be called any number of times. The ASGI
    application calls start() on lifespan startup, and before the first
    connection for servers without lifespan events, such as daphne.
    """

    def __init__(self) -> None:
        self.started = False
        self._start_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by start(), in the process that serves: a server that forks its
        # processes after importing the application must not share one id.
        self.process_id = ""
        self.word_source: WordSource | None = None

    async def start(self) -> None:
        if self.started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self.started:
                await self._start()

    async def _start(self) -> None:
        self.process_id = new_process_id()
        layer = get_channel_layer()
        self.fanout = Fanout()
        self.presence = Presence(layer, self.process_id)
        self.recorder = ConnectionRecorder(self.process_id)
        self.history: History = build_history()
        self.relay = Relay(layer, self.fanout, self.presence)
        await self.relay.join_groups()
        self._spawn(self.relay.run(), "relay")
        self._spawn(self._keep_presence(), "presence")
        # Not in _tasks: stop() ends it with a last flush instead of cancelling.
        self._recording = asyncio.create_task(self.recorder.run(), name="recorder")
        self._recording.add_done_callback(self._task_done)
        if settings.IN_PROCESS_WORD_SOURCE:
            self.word_source = build_word_source(layer, self.process_id)
            self._spawn(self.word_source.run(), "word source")
        self.started = True
        await self.presence.report(query=True)
        logger.info(
            "streaming started: layer %s, interval %.3f s, process %s, word source %s",
            type(layer).__name__,
            settings.WORD_INTERVAL,
            self.process_id,
            "in process" if self.word_source else "external",
        )

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=f"wordstream {name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s crashed", task.get_name(), exc_info=task.exception())

    async def _keep_presence(self) -> None:
        """Report the local count, rejoin the groups and expire silent processes."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            try:
                await self.relay.join_groups()
            except Exception as exc:  # noqa: BLE001 - retried on the next round
                logger.warning("joining the channel layer groups failed: %s", exc)
            await self.presence.report()
            lost = self.presence.expire_reports()
            if lost:
                await self._mark_lost(lost)

    async def _mark_lost(self, processes: list[str]) -> None:
        try:
            rows = await mark_lost(processes)
        except DatabaseError as exc:
            logger.warning("marking connections of %s lost failed: %s", processes, exc)
            return
        logger.warning("marked %d connections of %s lost", rows, ", ".join(processes))

    async def close_clients(self, code: int) -> None:
        """Close every WebSocket client with code and end every event stream.

        The server calls this on shutdown before it closes connections itself,
        so that clients get 1001 (going away) instead of the server's default.
        """
        if not self.started:
            return
        consumers = list(self.fanout)
        for consumer in consumers:
            consumer.close_soon(code)
        self.presence.end_streams()
        if consumers:
            logger.info(
                "closing %d word stream clients (/ws and /api/words) with code %d",
                len(consumers),
                code,
            )

    async def _cancel_tasks(self) -> None:
        """Cancel the background tasks and wait up to STOP_TIMEOUT for them.

        A task that a library keeps from ending must not hold up the
        server's shutdown: it is logged and left behind.
        """
        tasks = list(self._tasks)
        self._tasks.clear()
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        _, running = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        for task in running:
            logger.error(
                "task %s still running %s s after its cancellation",
                task.get_name(),
                STOP_TIMEOUT,
            )

    async def stop(self) -> None:
        """Cancel the background tasks, then write what is left to record."""
        if not self.started:
            return
        await self.close_clients(CloseCode.GOING_AWAY)
        self.started = False
        await self._cancel_tasks()
        self.recorder.stop()
        self.word_source = None
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await asyncio.gather(self._recording, return_exceptions=True)
                await self.presence.close()
                await self.recorder.flush()
        except TimeoutError:
            logger.error(
                "writing the last connection rows and presence report of %s "
                "timed out after %s s",
                self.process_id,
                STOP_TIMEOUT,
            )
        logger.info("streaming stopped: process %s", self.process_id)


services = Services()
