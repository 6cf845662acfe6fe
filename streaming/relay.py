"""The relay: one channel layer channel per server process.

Consumers own no channel of their own, so a tick costs one channel layer
message per process instead of one per client. The relay receives the words
and presence groups' events and hands them to this process's fan-out and
presence.
"""

import asyncio
import logging
from typing import Any

from .cancellation import raise_if_cancel_requested
from .fanout import Fanout
from .groups import PRESENCE_GROUP, PRESENCE_REPORT, WORD_TICK, WORDS_GROUP
from .history import Word
from .presence import Presence

logger = logging.getLogger(__name__)

# Seconds to wait before receiving again after the channel layer failed.
RETRY_DELAY = 1.0


class Relay:
    def __init__(self, channel_layer: Any, fanout: Fanout, presence: Presence) -> None:
        self.channel_layer = channel_layer
        self.fanout = fanout
        self.presence = presence
        self.channel_name = ""
        # The seq of the last word handed to the fan-out.
        self.last_seq = 0

    async def join_groups(self) -> None:
        """Add the relay's channel to its groups.

        Called again periodically: a Redis that restarted has forgotten the
        groups, and channels-redis expires memberships after a day.
        """
        if not self.channel_name:
            self.channel_name = await self.channel_layer.new_channel("relay")
        for group in (WORDS_GROUP, PRESENCE_GROUP):
            await self.channel_layer.group_add(group, self.channel_name)

    async def run(self) -> None:
        """Receive and dispatch events until cancelled.

        After the channel layer failed, the relay joins its groups again
        before it receives, because a restarted Redis has lost them.
        """
        failed = False
        while True:
            # The layer may have swallowed a cancellation and returned an event.
            raise_if_cancel_requested()
            try:
                if failed:
                    await self.join_groups()
                    await self.presence.report(query=True)
                    logger.info("relay %s: channel layer is back", self.channel_name)
                    failed = False
                event = await self.channel_layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep relaying once the layer is back
                raise_if_cancel_requested(exc)
                if not failed:
                    logger.warning(
                        "relay %s: channel layer failed: %s", self.channel_name, exc
                    )
                failed = True
                await asyncio.sleep(RETRY_DELAY)
                continue
            await self.dispatch(event)

    async def dispatch(self, event: dict[str, Any]) -> None:
        event_type = event.get("type")
        if event_type == WORD_TICK:
            await self._relay_word(event)
        elif event_type == PRESENCE_REPORT:
            self.presence.apply_report(event)
        else:
            logger.warning(
                "relay %s: unknown event type %r", self.channel_name, event_type
            )

    async def _relay_word(self, event: dict[str, Any]) -> None:
        seq = int(event["seq"])
        if seq == self.last_seq:
            # A repeated delivery is dropped, so no client gets a seq twice.
            logger.debug("relay %s: dropped repeated seq %d", self.channel_name, seq)
            return
        self.last_seq = seq
        word = Word(str(event["word"]), seq, int(event["ts"]), str(event["epoch"]))
        self.fanout.broadcast(word)
