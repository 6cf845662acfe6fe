import asyncio

import pytest
from websockets.protocol import State
from websockets.server import ServerProtocol

from streaming.fanout import Fanout, start_eagerly, text_frame
from streaming.history import Word


async def finishes_at_once(log):
    log.append("sent")


async def waits_for(future, log):
    try:
        log.append(await future)
    except ValueError as exc:
        log.append(f"error: {exc}")
    finally:
        log.append("finally")


async def test_send_without_wait_creates_no_task():
    log = []
    tasks_before = len(asyncio.all_tasks())
    assert start_eagerly(finishes_at_once(log)) is None
    assert log == ["sent"]
    assert len(asyncio.all_tasks()) == tasks_before


async def test_waiting_send_continues_in_task():
    log = []
    future = asyncio.get_running_loop().create_future()
    task = start_eagerly(waits_for(future, log))
    assert task is not None
    assert log == []
    future.set_result("written")
    await asyncio.wait_for(task, 1)
    assert log == ["written", "finally"]


async def test_waiting_send_receives_future_error():
    log = []
    future = asyncio.get_running_loop().create_future()
    task = start_eagerly(waits_for(future, log))
    future.set_exception(ValueError("socket gone"))
    await asyncio.wait_for(task, 1)
    assert log == ["error: socket gone", "finally"]


async def test_cancelled_send_runs_its_cleanup():
    log = []
    future = asyncio.get_running_loop().create_future()
    task = start_eagerly(waits_for(future, log))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["finally"]


async def test_sleep_zero_inside_send_is_driven():
    log = []

    async def yields_once():
        await asyncio.sleep(0)
        log.append("after yield")

    task = start_eagerly(yields_once())
    assert task is not None
    await asyncio.wait_for(task, 1)
    assert log == ["after yield"]


class RecordingSubscriber:
    def __init__(self, accept=True, fail=False):
        self.messages = []
        self.frames = []
        self.accept = accept
        self.fail = fail

    def offer(self, outgoing):
        if self.fail:
            raise ConnectionResetError("reset by peer")
        self.messages.append(outgoing.message)
        self.frames.append(outgoing.frame)
        return self.accept

    def close_soon(self, code):
        pass


def test_broadcast_encodes_frame_once_per_tick():
    fanout = Fanout()
    subscribers = [RecordingSubscriber() for _ in range(3)]
    for subscriber in subscribers:
        fanout.add(subscriber)
    fanout.broadcast(Word("harbour", 7, 1000, "e1"))
    messages = [subscriber.messages[0] for subscriber in subscribers]
    assert messages[0] == {
        "type": "websocket.send",
        "text": '{"word": "harbour", "seq": 7, "ts": 1000, "epoch": "e1"}',
    }
    assert all(message is messages[0] for message in messages)
    frames = [subscriber.frames[0] for subscriber in subscribers]
    assert frames[0] == text_frame(messages[0]["text"])
    assert all(frame is frames[0] for frame in frames)


@pytest.mark.parametrize("length", [0, 60, 125, 126, 65535, 65536, 70000])
def test_text_frame_matches_websockets_framing(length):
    text = "é" * (length // 2) + "a" * (length % 2)
    protocol = ServerProtocol()
    protocol.state = State.OPEN
    protocol.send_text(text.encode())
    assert text_frame(text) == b"".join(protocol.data_to_send())


def test_failing_subscriber_is_removed_and_others_served():
    fanout = Fanout()
    broken, healthy = RecordingSubscriber(fail=True), RecordingSubscriber()
    fanout.add(broken)
    fanout.add(healthy)
    fanout.broadcast(Word("a", 1, 1, "e1"))
    fanout.broadcast(Word("b", 2, 2, "e1"))
    assert len(fanout) == 1
    assert [m["text"] for m in healthy.messages] == [
        '{"word": "a", "seq": 1, "ts": 1, "epoch": "e1"}',
        '{"word": "b", "seq": 2, "ts": 2, "epoch": "e1"}',
    ]
