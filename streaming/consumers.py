"""The WebSocket consumer at /ws."""

import logging
import uuid
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from .models import Connection
from .proxy import client_address, client_via, scope_header
from .recorder import Close
from .services import services

logger = logging.getLogger(__name__)


class WordConsumer(AsyncWebsocketConsumer):
    """Streams the deployment's words to one client.

    The consumer owns no channel layer channel: the process's relay receives
    each word once and the fan-out calls deliver() on every consumer. Messages
    from the client are ignored, and the connection stays open.
    """

    # None: Channels creates no channel and no receive task per consumer.
    channel_layer_alias = None

    async def connect(self) -> None:
        """Called on the handshake: accept, and join the fan-out and presence."""
        self.words_delivered = 0
        self.connection_id = uuid.uuid4()
        await self.accept()
        services.fanout.add(self)
        services.presence.client_connected()
        services.recorder.opened(self._new_record())
        logger.debug(
            "connected %s from %s", self.connection_id, client_address(self.scope)
        )

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        """Called for each client message; the stream is one-way, so it is dropped."""

    async def disconnect(self, code: int) -> None:
        """Called once the socket has closed, whoever closed it."""
        if not hasattr(self, "connection_id"):
            return
        services.fanout.discard(self)
        services.presence.client_disconnected()
        close = Close(self.connection_id, timezone.now(), code, self.words_delivered)
        services.recorder.closed(close)
        logger.debug("disconnected %s with code %s", self.connection_id, code)

    async def deliver(self, message: dict[str, Any]) -> None:
        """Send one prepared websocket.send message; called by the fan-out."""
        await self.base_send(message)
        self.words_delivered += 1

    def _new_record(self) -> Connection:
        user_agent = scope_header(self.scope, b"user-agent") or ""
        return Connection(
            id=self.connection_id,
            opened_at=timezone.now(),
            client_address=client_address(self.scope),
            user_agent=user_agent[:512],
            via=client_via(self.scope),
        )
