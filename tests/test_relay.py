"""The relay's receive loop, and the shutdown of the process's background tasks."""

import asyncio
import contextlib
import logging

import pytest

from streaming.fanout import Fanout
from streaming.presence import Presence
from streaming.relay import Relay
from streaming.services import STOP_TIMEOUT, Services

WAIT = 5.0


class SwallowingLayer:
    """A channel layer whose receive turns a cancellation into another error.

    channels-redis did this during a server's shutdown: the relay logged
    "Connection closed by server." and went on receiving after its
    cancellation.
    """

    def __init__(self) -> None:
        self.receiving = asyncio.Event()

    async def receive(self, channel: str) -> dict:
        self.receiving.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        raise ConnectionError("Connection closed by server.")


async def test_relay_stops_when_layer_swallows_cancel():
    layer = SwallowingLayer()
    relay = Relay(layer, Fanout(), Presence(layer, "test-process"))
    relay.channel_name = "relay.test"
    task = asyncio.ensure_future(relay.run())
    await asyncio.wait_for(layer.receiving.wait(), WAIT)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert task.cancelled()


async def test_stop_leaves_behind_task_that_ignores_cancel(caplog):
    services = Services()
    release = asyncio.Event()
    running = asyncio.Event()

    async def stubborn() -> None:
        running.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    services._spawn(stubborn(), "stubborn")
    await asyncio.wait_for(running.wait(), WAIT)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.ERROR, logger="streaming.services"):
        await services._cancel_tasks()
    waited = loop.time() - started

    assert STOP_TIMEOUT <= waited < STOP_TIMEOUT + 1
    assert "task wordstream stubborn still running" in caplog.text
    release.set()
