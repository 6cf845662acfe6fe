import asyncio
import random

import pytest
from redis.asyncio import Redis

from streaming.groups import WORD_TICK, WORDS_GROUP
from streaming.history import (
    EPOCH_KEY,
    HISTORY_KEY,
    LocalHistory,
    RedisHistory,
)
from streaming.leadership import LOCK_KEY, SEQ_KEY, LocalLeadership, RedisLeadership
from streaming.source import WordSource
from streaming.words import Vocabulary


class RecordingLayer:
    """A channel layer stand-in that records group_send calls with their loop time."""

    def __init__(self, work: float = 0.0):
        self.sent: list[tuple[float, str, dict]] = []
        self.work = work

    async def group_send(self, group, message):
        self.sent.append((asyncio.get_running_loop().time(), group, message))
        if self.work:
            await asyncio.sleep(self.work)


def local_leadership():
    return LocalLeadership(LocalHistory(100))


def redis_leadership(redis, name, lock_ttl, length=100):
    return RedisLeadership(redis, name, lock_ttl, length)


def vocabulary():
    return Vocabulary(["alpha", "beta", "gamma"], rng=random.Random(3))


async def run_for(source, seconds):
    task = asyncio.create_task(source.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_ticks_do_not_drift_under_slow_work():
    interval = 0.05
    # Each publish takes 60% of the interval: a sleep of one interval after
    # each tick would fall behind by 0.6 s over 20 ticks.
    layer = RecordingLayer(work=0.03)
    source = WordSource(layer, local_leadership(), vocabulary(), interval, "test")
    await run_for(source, 21.5 * interval)
    times = [sent[0] for sent in layer.sent][:20]
    assert len(times) == 20
    offsets = [moment - times[0] - n * interval for n, moment in enumerate(times)]
    # A drifting schedule leaves every later tick further behind. A scheduling
    # hiccup on a busy machine delays one tick, and the next is on time again.
    off_schedule = [offset for offset in offsets if abs(offset) > 0.015]
    assert len(off_schedule) <= 2, offsets
    assert max(abs(offset) for offset in offsets) < interval / 2, offsets


async def test_word_events_have_consecutive_seq():
    layer = RecordingLayer()
    source = WordSource(layer, local_leadership(), vocabulary(), 0.01, "test")
    await run_for(source, 0.2)
    events = [message for _, _, message in layer.sent]
    assert {group for _, group, _ in layer.sent} == {WORDS_GROUP}
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert {event["type"] for event in events} == {WORD_TICK}
    assert {event["word"] for event in events} <= {"alpha", "beta", "gamma"}


async def test_late_ticks_are_skipped_not_bunched():
    layer = RecordingLayer()
    interval = 0.05
    source = WordSource(layer, local_leadership(), vocabulary(), interval, "test")
    task = asyncio.create_task(source.run())
    await asyncio.sleep(0.12)
    # Block the event loop for six intervals, as a stalled process would.
    import time

    time.sleep(6 * interval)
    await asyncio.sleep(0.12)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    times = [sent[0] for sent in layer.sent]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # Ticks more than half an interval late are skipped, so two words go out
    # at least half an interval apart, less the loop's wake-up jitter under
    # load. Bunched ticks would be about 0 apart.
    assert min(gaps) > interval / 4


async def test_local_leadership_has_one_leader():
    history = LocalHistory(10)
    first, second = LocalLeadership(history), LocalLeadership(history)
    assert await first.acquire()
    assert not await second.acquire()
    assert await second.next_tick("a", 1, 0) is None
    assert (await first.next_tick("a", 1, 0)).seq == 1
    await first.release()
    assert await second.acquire()
    word = await second.next_tick("b", 2, 0)
    assert (word.word, word.seq, word.ts, word.epoch) == ("b", 2, 2, history.epoch)


async def test_local_history_keeps_the_last_words():
    history = LocalHistory(3)
    for n in range(5):
        history.record(f"w{n}", n, 0)
    recovery = await history.since(3)
    assert [word.seq for word in recovery.words] == [4, 5]
    assert recovery.oldest_seq == 3
    assert recovery.is_complete(3)
    assert recovery.is_complete(2)
    assert not recovery.is_complete(1)


@pytest.fixture
async def redis(redis_server):
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_redis_leadership_has_one_leader(redis):
    first = redis_leadership(redis, "first", lock_ttl=2)
    second = redis_leadership(redis, "second", lock_ttl=2)
    assert await first.acquire()
    assert not await second.acquire()
    assert await first.acquire()  # renewing the own lock succeeds
    assert (await first.next_tick("a", 10, 0)).seq == 1
    assert await second.next_tick("b", 11, 0) is None
    assert (await first.next_tick("c", 12, 1)).seq == 2
    assert await redis.get(LOCK_KEY) == b"first"


async def test_redis_leadership_taken_over_after_expiry(redis):
    dead = redis_leadership(redis, "dead", lock_ttl=0.3)
    successor = redis_leadership(redis, "successor", lock_ttl=0.3)
    assert await dead.acquire()
    assert (await dead.next_tick("a", 1, 0)).seq == 1
    # The holder stops renewing, as a killed process would.
    await asyncio.sleep(0.4)
    assert await successor.acquire()
    assert (await successor.next_tick("b", 2, 0)).seq == 2
    assert await dead.next_tick("c", 3, 1) is None


async def test_redis_leadership_release_frees_lock(redis):
    leader = redis_leadership(redis, "leader", lock_ttl=30)
    other = redis_leadership(redis, "other", lock_ttl=30)
    assert await leader.acquire()
    await other.release()  # releasing a lock held by another does nothing
    assert await redis.get(LOCK_KEY) == b"leader"
    await leader.release()
    assert await redis.get(LOCK_KEY) is None
    assert await other.acquire()


async def test_redis_seq_continues_after_data_loss(redis):
    leader = redis_leadership(redis, "leader", lock_ttl=30)
    assert await leader.acquire()
    await redis.set(SEQ_KEY, 41)
    assert (await leader.next_tick("a", 1, 41)).seq == 42
    await redis.delete(SEQ_KEY)
    # The counter is gone, as after a Redis restart; seq still increases.
    assert (await leader.next_tick("b", 2, 42)).seq == 43


async def test_redis_history_is_bounded_and_read_back(redis):
    leader = redis_leadership(redis, "leader", lock_ttl=30, length=4)
    assert await leader.acquire()
    words = [await leader.next_tick(f"w{n}", 1000 + n, 0) for n in range(6)]
    epochs = {word.epoch for word in words}
    assert len(epochs) == 1
    assert await redis.zcard(HISTORY_KEY) == 4
    recovery = await RedisHistory(redis).since(3)
    assert recovery.epoch == words[0].epoch
    assert recovery.oldest_seq == 3
    assert [(w.word, w.seq, w.ts) for w in recovery.words] == [
        ("w3", 4, 1003),
        ("w4", 5, 1004),
        ("w5", 6, 1005),
    ]
    assert not recovery.is_complete(1)


async def test_redis_history_burst_shares_reads(redis, redis_server):
    leader = redis_leadership(redis, "leader", lock_ttl=30)
    assert await leader.acquire()
    words = [await leader.next_tick(f"w{n}", 1000 + n, 0) for n in range(10)]
    # A pool of 2 connections: a read per caller would raise "Too many
    # connections" long before the thousandth caller.
    small_pool = Redis.from_url(redis_server.url, max_connections=2)
    history = RedisHistory(small_pool)
    reads_before = await zrangebyscore_calls(redis)
    callers = [history.since(n % 10) for n in range(1000)]
    recoveries = await asyncio.gather(*callers)
    await small_pool.aclose()

    for n, recovery in enumerate(recoveries):
        assert [w.seq for w in recovery.words] == [w.seq for w in words[n % 10 :]]
    assert await zrangebyscore_calls(redis) - reads_before == 1


async def test_redis_history_caller_after_send_reads_again(redis):
    leader = redis_leadership(redis, "leader", lock_ttl=30)
    assert await leader.acquire()
    first_word = await leader.next_tick("first", 1, 0)
    history = RedisHistory(redis)
    early = asyncio.ensure_future(history.since(0))
    # The early caller's read is sent once its task runs.
    await asyncio.sleep(0)
    later_word = await leader.next_tick("later", 2, first_word.seq)
    # Asked after the word was written, so the read must include it.
    late = await history.since(0)
    assert [w.word for w in late.words] == ["first", "later"]
    assert [w.word for w in (await early).words][0] == "first"
    assert later_word.seq == first_word.seq + 1


async def test_redis_history_cancelled_read_frees_callers(redis):
    leader = redis_leadership(redis, "leader", lock_ttl=30)
    assert await leader.acquire()
    await leader.next_tick("only", 1, 0)
    history = RedisHistory(redis)
    caller = asyncio.ensure_future(history.since(0))
    # The caller's task creates the read task; cancel that before it runs.
    await asyncio.sleep(0)
    history._read_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 5)
    # The next caller starts a read of its own.
    recovery = await asyncio.wait_for(history.since(0), 5)
    assert [w.word for w in recovery.words] == ["only"]


async def zrangebyscore_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return stats.get("cmdstat_zrangebyscore", {}).get("calls", 0)


async def test_redis_epoch_changes_when_history_is_lost(redis):
    leader = redis_leadership(redis, "leader", lock_ttl=30)
    assert await leader.acquire()
    before = await leader.next_tick("a", 1, 0)
    await redis.flushall()  # what a restart without persistence leaves
    assert await leader.acquire()
    after = await leader.next_tick("b", 2, before.seq)
    assert after.epoch != before.epoch
    assert after.seq == before.seq + 1
    assert await redis.get(EPOCH_KEY) == after.epoch.encode()


async def test_two_sources_publish_one_stream(redis):
    layer = RecordingLayer()
    sources = [
        WordSource(
            layer, redis_leadership(redis, name, lock_ttl=1), vocabulary(), 0.05, name
        )
        for name in ("one", "two")
    ]
    tasks = [asyncio.create_task(source.run()) for source in sources]
    await asyncio.sleep(1.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    seqs = [message["seq"] for _, _, message in layer.sent]
    assert len(seqs) >= 10
    assert seqs == list(range(1, len(seqs) + 1))
    assert [source.leading for source in sources] == [False, False]


class SwallowingLayer:
    """A channel layer whose second group_send waits and then swallows a
    cancellation, returning normally or raising failure in its place."""

    def __init__(self, failure: Exception | None = None):
        self.failure = failure
        self.sends = 0
        self.waiting = asyncio.Event()

    async def group_send(self, group, message):
        self.sends += 1
        if self.sends != 2:
            return
        self.waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if self.failure is not None:
                raise self.failure from None


@pytest.mark.parametrize("failure", [None, ConnectionError("Connection closed")])
async def test_source_stops_when_layer_swallows_cancel(failure):
    layer = SwallowingLayer(failure)
    source = WordSource(layer, local_leadership(), vocabulary(), 0.01, "test")
    task = asyncio.create_task(source.run())
    await asyncio.wait_for(layer.waiting.wait(), 5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()
    # Nothing was published after the cancellation.
    assert layer.sends == 2
    assert not source.leading
