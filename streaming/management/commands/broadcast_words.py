"""Run a word source as a process of its own."""

import asyncio
import contextlib
import logging
import signal
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand

from streaming.exceptions import ChannelLayerError
from streaming.leadership import new_process_id
from streaming.source import build_word_source

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Publish one word per WORD_INTERVAL seconds to every server process "
        "sharing REDIS_URL. Any number may run: a lock in Redis lets one lead."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            raise ChannelLayerError(
                "broadcast_words needs REDIS_URL: the in-memory channel layer "
                "cannot reach the server processes"
            )
        asyncio.run(self._run())

    async def _run(self) -> None:
        process_id = new_process_id()
        source = build_word_source(get_channel_layer(), process_id)
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        logger.info(
            "word source %s started: interval %.3f s, %d words",
            process_id,
            settings.WORD_INTERVAL,
            source.vocabulary.size,
        )
        # The signal handlers cancel this task: that is the normal way to stop.
        with contextlib.suppress(asyncio.CancelledError):
            await source.run()
        logger.info("word source %s stopped", process_id)
