"""Who may publish words: exactly one word source per deployment leads at a time."""

import asyncio
import logging
import os
import secrets
import socket
from typing import Protocol

from redis.asyncio import Redis

logger = logging.getLogger(__name__)

LOCK_KEY = "wordstream:word-source:lock"
SEQ_KEY = "wordstream:word-source:seq"

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

# Renew the lock and take the next seq in one step, so a candidate that lost
# the lock can never publish: it gets nil instead of a seq. ARGV[3] is the
# last seq the caller published: after Redis lost its data the counter
# continues above it instead of starting again at 1.
NEXT_SEQ_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return nil
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local seq = redis.call('INCR', KEYS[2])
if seq <= tonumber(ARGV[3]) then
  seq = tonumber(ARGV[3]) + 1
  redis.call('SET', KEYS[2], seq)
end
return seq
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

    async def next_seq(self, last_seq: int) -> int | None:
        """Return the seq after last_seq, or None when the lead has been lost."""
        ...

    async def release(self) -> None:
        """Give up the lead, if held, so another candidate can take over at once."""
        ...


class LocalLeadership:
    """Leadership inside one process, for the in-memory channel layer.

    The in-memory layer reaches no other process, so the process is the whole
    deployment and the first candidate in it leads.
    """

    _holder: "LocalLeadership | None" = None
    _seq = 0

    async def acquire(self) -> bool:
        if LocalLeadership._holder is None:
            LocalLeadership._holder = self
        return LocalLeadership._holder is self

    async def next_seq(self, last_seq: int) -> int | None:
        if LocalLeadership._holder is not self:
            return None
        LocalLeadership._seq = max(LocalLeadership._seq, last_seq) + 1
        return LocalLeadership._seq

    async def release(self) -> None:
        if LocalLeadership._holder is self:
            LocalLeadership._holder = None


class RedisLeadership:
    """A lock with a time to live in Redis, renewed on every tick.

    When the leader dies, its lock expires after lock_ttl seconds and the next
    candidate to poll takes over. The seq counter lives beside the lock, so a
    new leader continues the sequence instead of reusing numbers.
    """

    def __init__(self, redis: Redis, token: str, lock_ttl: float) -> None:
        self.redis = redis
        self.token = token
        self.lock_ttl_ms = int(lock_ttl * 1000)
        self._acquire = redis.register_script(ACQUIRE_SCRIPT)
        self._next_seq = redis.register_script(NEXT_SEQ_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)

    async def acquire(self) -> bool:
        keys = [LOCK_KEY]
        return bool(await self._acquire(keys=keys, args=[self.token, self.lock_ttl_ms]))

    async def next_seq(self, last_seq: int) -> int | None:
        keys = [LOCK_KEY, SEQ_KEY]
        args = [self.token, self.lock_ttl_ms, last_seq]
        seq = await self._next_seq(keys=keys, args=args)
        return None if seq is None else int(seq)

    async def release(self) -> None:
        # Shielded so that a cancelled source still frees the lock.
        await asyncio.shield(self._release(keys=[LOCK_KEY], args=[self.token]))
