"""The word source: a candidate for the lead that, while leading, publishes one
word per tick to the words group."""

import asyncio
import logging
import time
from typing import Any

from django.conf import settings
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .cancellation import raise_if_cancel_requested
from .groups import WORD_TICK, WORDS_GROUP
from .history import History, LocalHistory, RedisHistory, Word, history_length
from .leadership import Leadership, LocalLeadership, RedisLeadership
from .words import Vocabulary

logger = logging.getLogger(__name__)

# Seconds a leader's lock outlives its last renewal. Ticks renew it, so a
# live leader keeps it; after a crash the next candidate takes over within
# this time plus its polling interval.
MIN_LOCK_TTL = 3.0


class WordSource:
    """Publishes one word per interval while it holds the lead.

    Tick n is due n intervals after the first tick of this lead, measured on
    the event loop's monotonic clock, so the time spent per tick never adds up
    to drift. A tick more than half an interval late is skipped rather than
    sent close to the next one.
    """

    def __init__(
        self,
        channel_layer: Any,
        leadership: Leadership,
        vocabulary: Vocabulary,
        interval: float,
        name: str,
    ) -> None:
        self.channel_layer = channel_layer
        self.leadership = leadership
        self.vocabulary = vocabulary
        self.interval = interval
        self.name = name
        # Candidates that do not lead poll for the lock this often.
        self.retry_interval = max(interval, 1.0)
        self.leading = False
        self.last_seq = 0

    async def run(self) -> None:
        """Compete for the lead until cancelled, and publish while leading."""
        try:
            while True:
                await self._try_to_lead()
                await asyncio.sleep(self.retry_interval)
        finally:
            await self._release()

    async def _try_to_lead(self) -> None:
        try:
            if not await self.leadership.acquire():
                return
            self._set_leading(True)
            await self._publish_ticks()
        except (RedisError, OSError) as exc:
            # Redis's client may have raised this error instead of a cancellation.
            raise_if_cancel_requested(exc)
            logger.warning("word source %s failed: %s; retrying", self.name, exc)
        finally:
            self._set_leading(False)

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if leading:
            logger.info("word source %s took the lead", self.name)
        else:
            logger.info("word source %s lost the lead", self.name)

    async def _publish_ticks(self) -> None:
        loop = asyncio.get_running_loop()
        first_tick = loop.time()
        tick = 0
        while True:
            # A Redis call of the previous tick may have returned instead of
            # raising a cancellation.
            raise_if_cancel_requested()
            delay = first_tick + tick * self.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > self.interval / 2:
                # Jump to the first tick still due in the future.
                missed = int(-delay // self.interval) + 1
                logger.warning(
                    "word source %s skipped %d late ticks", self.name, missed
                )
                tick += missed
                continue
            word = await self.leadership.next_tick(
                self.vocabulary.draw(), int(time.time() * 1000), self.last_seq
            )
            if word is None:
                return
            await self.publish(word)
            self.last_seq = word.seq
            tick += 1

    async def publish(self, word: Word) -> None:
        """Send one numbered word to every server process."""
        event = {"type": WORD_TICK, **word.frame()}
        await self.channel_layer.group_send(WORDS_GROUP, event)

    async def _release(self) -> None:
        try:
            await self.leadership.release()
        except (RedisError, OSError) as exc:
            logger.warning(
                "word source %s could not release the lead: %s", self.name, exc
            )


# The history of a deployment that is one process, shared by its candidates
# and read by its consumers.
_local_history: LocalHistory | None = None


def local_history() -> LocalHistory:
    global _local_history
    if _local_history is None:
        _local_history = LocalHistory(
            history_length(settings.WORD_INTERVAL, settings.WORD_HISTORY_SECONDS)
        )
    return _local_history


def reset_local_history() -> None:
    """Forget the in-memory history, as a restart of the process would."""
    global _local_history
    _local_history = None


def build_leadership(process_id: str) -> Leadership:
    if not settings.REDIS_URL:
        return LocalLeadership(local_history())
    redis = Redis.from_url(settings.REDIS_URL)
    lock_ttl = max(MIN_LOCK_TTL, 3 * settings.WORD_INTERVAL)
    length = history_length(settings.WORD_INTERVAL, settings.WORD_HISTORY_SECONDS)
    return RedisLeadership(redis, process_id, lock_ttl, length)


def build_history() -> History:
    """Return the history that this deployment's word source writes."""
    if not settings.REDIS_URL:
        return local_history()
    return RedisHistory(Redis.from_url(settings.REDIS_URL))


def build_word_source(channel_layer: Any, process_id: str) -> WordSource:
    return WordSource(
        channel_layer,
        build_leadership(process_id),
        Vocabulary.from_settings(settings.WORD_LIST),
        settings.WORD_INTERVAL,
        process_id,
    )
