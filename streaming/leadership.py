"""Leadership of the word source: one candidate per deployment publishes at a time."""

import asyncio
import logging
import os
import secrets
import socket
from typing import Protocol

from redis.asyncio import Redis

from .history import EPOCH_KEY, HISTORY_KEY, LocalHistory, Word, new_epoch

logger = logging.getLogger(__name__)

LOCK_KEY = "wordstream:word-source:lock"
SEQ_KEY = "wordstream:word-source:seq"
TICK_KEYS = [LOCK_KEY, SEQ_KEY, EPOCH_KEY, HISTORY_KEY]

# Take the lock, or renew it when this candidate already holds it.
ACQUIRE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""

# One tick, atomically: renew the lock, take the next seq, and store the word
# in the history, so a candidate that lost the lock can never publish (it
# gets nil). The epoch is created when missing, that is, with the history.
# KEYS: lock, seq, epoch, history.
# ARGV: token, lock TTL (ms), the caller's last seq, a new epoch, word, ts,
# history length. Passing the last seq makes the counter continue above it
# after Redis lost its data, instead of starting again at 1.
TICK_SCRIPT = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return nil
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local seq = redis.call('INCR', KEYS[2])
if seq <= tonumber(ARGV[3]) then
  seq = tonumber(ARGV[3]) + 1
  redis.call('SET', KEYS[2], seq)
end
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
end
redis.call('ZADD', KEYS[4], seq, seq .. '\t' .. ARGV[6] .. '\t' .. ARGV[5])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[7]) - 1)
return {seq, epoch}
"""

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def new_process_id() -> str:
    """Return an id for this process that stays unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leadership(Protocol):
    async def acquire(self) -> bool:
        """Try once to become the leader; return True while this candidate leads."""
        ...

    async def next_tick(self, word: str, ts: int, last_seq: int) -> Word | None:
        """Number a word and add it to the history; return None when the lead
        has been lost. The seq is above last_seq even if the history was lost.
        """
        ...

    async def release(self) -> None:
        """Give up the lead, if held, so another candidate can take over at once."""
        ...


class LocalLeadership:
    """Leadership inside one process, for the in-memory channel layer.

    The in-memory layer reaches no other process, so the process is the whole
    deployment, the first candidate in it leads, and the history lives in
    its memory.
    """

    def __init__(self, history: LocalHistory) -> None:
        self.history = history

    async def acquire(self) -> bool:
        if self.history.leader is None:
            self.history.leader = self
        return self.history.leader is self

    async def next_tick(self, word: str, ts: int, last_seq: int) -> Word | None:
        if self.history.leader is not self:
            return None
        return self.history.record(word, ts, last_seq)

    async def release(self) -> None:
        if self.history.leader is self:
            self.history.leader = None


class RedisLeadership:
    """A lock with a time to live in Redis, renewed on every tick.

    When the leader dies, its lock expires after lock_ttl seconds and the next
    candidate to poll takes over. The seq counter lives beside the lock, so a
    new leader continues the sequence instead of reusing numbers.
    """

    def __init__(
        self, redis: Redis, token: str, lock_ttl: float, history_length: int
    ) -> None:
        self.redis = redis
        self.token = token
        self.lock_ttl_ms = int(lock_ttl * 1000)
        self.history_length = history_length
        self._acquire = redis.register_script(ACQUIRE_SCRIPT)
        self._tick = redis.register_script(TICK_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)

    async def acquire(self) -> bool:
        keys = [LOCK_KEY]
        return bool(await self._acquire(keys=keys, args=[self.token, self.lock_ttl_ms]))

    async def next_tick(self, word: str, ts: int, last_seq: int) -> Word | None:
        args = [
            self.token,
            self.lock_ttl_ms,
            last_seq,
            new_epoch(),
            word,
            ts,
            self.history_length,
        ]
        result = await self._tick(keys=TICK_KEYS, args=args)
        if result is None:
            return None
        seq, epoch = result
        return Word(word, int(seq), ts, epoch.decode())

    async def release(self) -> None:
        # Shielded so that a cancelled source still frees the lock.
        await asyncio.shield(self._release(keys=[LOCK_KEY], args=[self.token]))
