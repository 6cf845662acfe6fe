"""The history of recent words, from which clients recover what they missed.

The history keeps at least the last WORD_HISTORY_SECONDS of words (300 by
default), keyed by seq,
in Redis when REDIS_URL is set and in this process's memory otherwise. Its
epoch is a random id created with the history: when the history is lost
(Redis restarted without persistence, or the single process restarted), the
epoch changes, so a client can tell "nothing missed" from "history gone".
"""

import asyncio
import functools
import math
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

HISTORY_KEY = "wordstream:history"
EPOCH_KEY = "wordstream:epoch"


@dataclass(frozen=True)
class Word:
    word: str
    seq: int
    ts: int
    epoch: str

    def frame(self) -> dict[str, Any]:
        """Return the word as the JSON object clients receive."""
        return {"word": self.word, "seq": self.seq, "ts": self.ts, "epoch": self.epoch}


@dataclass(frozen=True)
class Recovery:
    """The words after a given seq that the history contains, with its epoch."""

    epoch: str
    # Words after since, in seq order.
    words: list[Word]
    # The oldest seq the history still holds, or None when it is empty.
    oldest_seq: int | None
    # The newest seq the history holds, or None when it is empty.
    newest_seq: int | None

    def after(self, since: int) -> "Recovery":
        """Return the same recovery without the words up to since."""
        return Recovery(
            self.epoch,
            [word for word in self.words if word.seq > since],
            self.oldest_seq,
            self.newest_seq,
        )

    def is_complete(self, since: int) -> bool:
        """Return True when no word after since has left the history."""
        return self.oldest_seq is None or self.oldest_seq <= since + 1


def history_length(interval: float, seconds: float) -> int:
    """Return how many words cover this many seconds at this interval."""
    return math.ceil(seconds / interval) + 1


def new_epoch() -> str:
    return secrets.token_hex(8)


def encode_entry(seq: int | str, ts: int | str, word: str) -> str:
    # Words never contain whitespace (see words.is_streamable).
    return f"{seq}\t{ts}\t{word}"


def decode_entry(entry: bytes | str, epoch: str) -> Word:
    text = entry.decode() if isinstance(entry, bytes) else entry
    seq, ts, word = text.split("\t", 2)
    return Word(word, int(seq), int(ts), epoch)


class History(Protocol):
    async def since(self, seq: int) -> Recovery:
        """Return the epoch and the words after seq that the history holds."""
        ...


class LocalHistory:
    """The history and seq counter of a deployment that is one process."""

    def __init__(self, length: int) -> None:
        self.epoch = new_epoch()
        self.seq = 0
        self.words: deque[Word] = deque(maxlen=length)
        # The word source candidate that leads; all candidates of the
        # process share this history.
        self.leader: object | None = None

    def record(self, word: str, ts: int, last_seq: int) -> Word:
        """Number the next word and keep it; return it with its seq and epoch."""
        self.seq = max(self.seq, last_seq) + 1
        entry = Word(word, self.seq, ts, self.epoch)
        self.words.append(entry)
        return entry

    async def since(self, seq: int) -> Recovery:
        oldest = self.words[0].seq if self.words else None
        newest = self.words[-1].seq if self.words else None
        missed = [word for word in self.words if word.seq > seq]
        return Recovery(self.epoch, missed, oldest, newest)


class RedisHistory:
    """Reads the history that the leading word source writes to Redis.

    Callers that arrive at the same moment, as a thousand clients do when a
    proxy restarts, share one read, and one read runs at a time. A read per
    caller would take a connection each from the client's pool, and
    redis-py's pool raises once its 100 connections are in use. A read
    serves only the callers that arrived before it was sent, so none gets a
    history older than its call.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        # The read not yet sent, and the lowest seq its callers passed.
        self._next_read: asyncio.Future[Recovery] | None = None
        self._next_since = 0
        self._read_task: asyncio.Task[None] | None = None

    async def since(self, seq: int) -> Recovery:
        if self._next_read is None:
            loop = asyncio.get_running_loop()
            self._next_read = loop.create_future()
            # Retrieved here too, so an error that no caller awaits any more
            # is not logged as never retrieved.
            self._next_read.add_done_callback(_retrieve_exception)
            self._next_since = seq
            self._read_task = loop.create_task(
                self._read(self._next_read, self._read_task)
            )
            self._read_task.add_done_callback(
                functools.partial(self._abandon, self._next_read)
            )
        else:
            self._next_since = min(self._next_since, seq)
        recovery = await asyncio.shield(self._next_read)
        return recovery.after(seq)

    async def _read(
        self, result: asyncio.Future[Recovery], previous: asyncio.Task[None] | None
    ) -> None:
        try:
            # One read at a time: callers that arrive meanwhile share the next.
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            # Callers from here on wait for the next read.
            since, self._next_read = self._next_since, None
            result.set_result(await self._read_since(since))
        except Exception as exc:
            # Every caller waiting for this read gets the error.
            result.set_exception(exc)

    def _abandon(
        self, result: asyncio.Future[Recovery], task: asyncio.Task[None]
    ) -> None:
        """Cancel a read's result when its task ended without one.

        A task cancelled before it started never runs its body, so this is
        a done callback: the callers must not wait forever.
        """
        if not result.done():
            result.cancel()
        if self._next_read is result:
            self._next_read = None

    async def _read_since(self, seq: int) -> Recovery:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(EPOCH_KEY)
            pipe.zrange(HISTORY_KEY, 0, 0, withscores=True)
            pipe.zrange(HISTORY_KEY, -1, -1, withscores=True)
            pipe.zrangebyscore(HISTORY_KEY, f"({seq}", "+inf")
            epoch_value, oldest, newest, entries = await pipe.execute()
        epoch = epoch_value.decode() if epoch_value else ""
        return Recovery(
            epoch,
            [decode_entry(entry, epoch) for entry in entries],
            int(oldest[0][1]) if oldest else None,
            int(newest[0][1]) if newest else None,
        )


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
