import asyncio
import random

import pytest
from redis.asyncio import Redis

from streaming.groups import WORD_TICK, WORDS_GROUP
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


@pytest.fixture(autouse=True)
def reset_local_leadership():
    LocalLeadership._holder = None
    LocalLeadership._seq = 0


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
    source = WordSource(layer, LocalLeadership(), vocabulary(), interval, "test")
    await run_for(source, 21.5 * interval)
    times = [sent[0] for sent in layer.sent]
    assert len(times) == 22
    for n, moment in enumerate(times):
        assert moment - times[0] == pytest.approx(n * interval, abs=0.015)


async def test_word_events_have_consecutive_seq():
    layer = RecordingLayer()
    source = WordSource(layer, LocalLeadership(), vocabulary(), 0.01, "test")
    await run_for(source, 0.2)
    events = [message for _, _, message in layer.sent]
    assert {group for _, group, _ in layer.sent} == {WORDS_GROUP}
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert {event["type"] for event in events} == {WORD_TICK}
    assert {event["word"] for event in events} <= {"alpha", "beta", "gamma"}


async def test_late_ticks_are_skipped_not_bunched():
    layer = RecordingLayer()
    interval = 0.05
    source = WordSource(layer, LocalLeadership(), vocabulary(), interval, "test")
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
    # No two words go out closer together than half an interval.
    assert min(gaps) > interval / 2


async def test_local_leadership_has_one_leader():
    first, second = LocalLeadership(), LocalLeadership()
    assert await first.acquire()
    assert not await second.acquire()
    assert await second.next_seq(0) is None
    assert await first.next_seq(0) == 1
    await first.release()
    assert await second.acquire()
    assert await second.next_seq(0) == 2


@pytest.fixture
async def redis(redis_server):
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_redis_leadership_has_one_leader(redis):
    first = RedisLeadership(redis, "first", lock_ttl=2)
    second = RedisLeadership(redis, "second", lock_ttl=2)
    assert await first.acquire()
    assert not await second.acquire()
    assert await first.acquire()  # renewing the own lock succeeds
    assert await first.next_seq(0) == 1
    assert await second.next_seq(0) is None
    assert await first.next_seq(1) == 2
    assert await redis.get(LOCK_KEY) == b"first"


async def test_redis_leadership_taken_over_after_expiry(redis):
    dead = RedisLeadership(redis, "dead", lock_ttl=0.3)
    successor = RedisLeadership(redis, "successor", lock_ttl=0.3)
    assert await dead.acquire()
    assert await dead.next_seq(0) == 1
    # The holder stops renewing, as a killed process would.
    await asyncio.sleep(0.4)
    assert await successor.acquire()
    assert await successor.next_seq(0) == 2
    assert await dead.next_seq(1) is None


async def test_redis_leadership_release_frees_lock(redis):
    leader = RedisLeadership(redis, "leader", lock_ttl=30)
    other = RedisLeadership(redis, "other", lock_ttl=30)
    assert await leader.acquire()
    await other.release()  # releasing a lock held by another does nothing
    assert await redis.get(LOCK_KEY) == b"leader"
    await leader.release()
    assert await redis.get(LOCK_KEY) is None
    assert await other.acquire()


async def test_redis_seq_continues_after_data_loss(redis):
    leader = RedisLeadership(redis, "leader", lock_ttl=30)
    assert await leader.acquire()
    await redis.set(SEQ_KEY, 41)
    assert await leader.next_seq(41) == 42
    await redis.delete(SEQ_KEY)
    # The counter is gone, as after a Redis restart; seq still increases.
    assert await leader.next_seq(42) == 43


async def test_two_sources_publish_one_stream(redis):
    layer = RecordingLayer()
    sources = [
        WordSource(
            layer, RedisLeadership(redis, name, lock_ttl=1), vocabulary(), 0.05, name
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
