"""The WebSocket consumer at /ws."""

import asyncio
import json
import logging
import time
import uuid
from typing import Any, NoReturn

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from .closecodes import CloseCode
from .fanout import FRAMES_EXTENSION, FrameWriter, Outgoing, start_eagerly
from .history import Word
from .models import Connection
from .proxy import client_address, client_via, scope_header
from .recorder import Close
from .recovery import ResumePoint, is_newer, last_seen, recover, resume_point_from_query
from .services import services

logger = logging.getLogger(__name__)


class WordConsumer(AsyncWebsocketConsumer):
    """Streams the deployment's words to one client.

    The consumer owns no channel layer channel: the process's relay receives
    each word once and the fan-out offers it to every consumer. A frame that
    cannot go out at once waits in a backlog, because the client has not read
    the previous ones. A client more than WS_MAX_BACKLOG frames behind is
    closed with 1013. Client messages are ignored, but a client that sends
    more than WS_MAX_CLIENT_MESSAGES_PER_SECOND is closed with 1008.
    """

    # None: Channels creates no channel and no receive task per consumer.
    channel_layer_alias = None

    async def connect(self) -> None:
        """Called on the handshake: accept, and join the fan-out and presence.

        With ?since=<seq>&epoch=<epoch>, the missed words go out first, and
        live words that arrive meanwhile are held back until they are sent.
        """
        self.words_delivered = 0
        self.connection_id = uuid.uuid4()
        self.opened_at = timezone.now()
        self._pending_send: asyncio.Task[None] | None = None
        # Frames queued behind a send that waits for the socket; None while
        # the client keeps up, which saves the list's memory.
        self._backlog: list[Outgoing] | None = None
        # Without the server's frame writer, every word goes through send().
        frames = self.scope.get("extensions", {}).get(FRAMES_EXTENSION, {})
        self._write_frame: FrameWriter | None = frames.get("write")
        self._closing = False
        self._rate_window = (0, 0)  # (second, messages in it)
        self._last_word: Word | None = None
        resume_point = resume_point_from_query(self.scope.get("query_string", b""))
        # Live words that arrive while a recovery is sent, or None.
        self._deferred: list[Outgoing] | None = [] if resume_point else None
        self._joined = False
        await self.accept()
        services.fanout.add(self)
        services.presence.client_connected()
        record = self._new_record()
        services.recorder.opened(record)
        # From here on, disconnect() undoes the three calls above, once.
        self._joined = True
        logger.debug("connected %s from %s", self.connection_id, record.client_address)
        if resume_point is not None:
            await self._recover(resume_point)

    async def _recover(self, point: ResumePoint) -> None:
        notice, words = await recover(services.history, point)
        self._last_word = last_seen(point) if notice["recovered"] else None
        await self.send(text_data=json.dumps(notice))
        for word in words:
            await self.send(text_data=json.dumps(word.frame()))
            self.words_delivered += 1
            self._last_word = word
        deferred, self._deferred = self._deferred or [], None
        for outgoing in deferred:
            self.offer(outgoing)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Run the consumer: dispatch each ASGI event until the socket closes.

        Channels' own loop runs each receive in a task of its own, so that it
        can wait on a channel layer channel too. This consumer has none, so
        it awaits receive directly: one task less per connection.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # A handler that raised, such as connect() when the client left
            # during its recovery, skipped the disconnect event.
            await self.disconnect(CloseCode.ABNORMAL_CLOSURE)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Called for each ASGI event: run its handler.

        Channels' own dispatch first closes stale database connections in
        the database thread, a thread hop per event that halves the connect
        rate. This consumer never touches the database: the recorder does,
        through database_sync_to_async, which does that cleanup itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']!r}")
        await handler(message)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        """Called for each client message; the stream is one-way, so it is dropped."""
        second = int(time.monotonic())
        window, count = self._rate_window
        count = count + 1 if window == second else 1
        self._rate_window = (second, count)
        if count == settings.WS_MAX_CLIENT_MESSAGES_PER_SECOND + 1:
            logger.warning(
                "closing %s: over %d messages a second", self._client, count - 1
            )
            await self.close(code=CloseCode.POLICY_VIOLATION)

    async def close(
        self, code: int | bool | None = None, reason: str | None = None
    ) -> None:
        """Close the connection from the server's side.

        daphne's WebSocket library (autobahn) takes only a plain int, and
        from a server only 1000 or 3000 to 4999. It raises for 1001, 1008
        and 1013, so under daphne such a close goes out as 1000 instead.
        """
        if isinstance(code, int) and not isinstance(code, bool):
            code = int(code)
        try:
            await super().close(code=code, reason=reason)
        except OSError:
            raise
        except Exception as exc:
            if not isinstance(code, int) or "close code" not in str(exc):
                raise
            logger.debug("closing %s with %d failed: %s", self._client, code, exc)
            await super().close(code=CloseCode.NORMAL_CLOSURE.value, reason=reason)

    async def websocket_disconnect(self, message: dict[str, Any]) -> NoReturn:
        """Called when the socket has closed. Run disconnect() and stop.

        Channels' handler would also leave the consumer's groups, but this
        consumer has none. It would then close stale database connections in
        the database thread. That is a thread hop per disconnect, and when
        thousands of clients leave at once they queue behind that one thread.
        """
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        """Called once the socket has closed, by the client or by the server."""
        if not getattr(self, "_joined", False):
            return
        self._joined = False
        services.fanout.discard(self)
        services.presence.client_disconnected()
        close = Close(
            self.connection_id,
            self.opened_at,
            timezone.now(),
            code,
            self.words_delivered,
        )
        services.recorder.closed(close)
        if self._pending_send is not None:
            self._pending_send.cancel()
        logger.debug("disconnected %s with code %s", self.connection_id, code)

    def offer(self, outgoing: Outgoing) -> bool:
        """Send a word, or queue it behind a send that waits; called by the
        fan-out. Return False if the frame is dropped.
        """
        if self._closing:
            return False
        if self._deferred is not None:
            self._deferred.append(outgoing)
            return True
        if not is_newer(outgoing.word, self._last_word):
            return True
        self._last_word = outgoing.word
        if self._pending_send is None:
            self._send(outgoing)
            return True
        if self._backlog is None:
            self._backlog = []
        if len(self._backlog) >= settings.WS_MAX_BACKLOG:
            logger.warning(
                "closing %s: %d frames behind", self._client, len(self._backlog)
            )
            self.close_soon(CloseCode.TRY_AGAIN_LATER)
            return False
        self._backlog.append(outgoing)
        return True

    def _send(self, outgoing: Outgoing) -> None:
        """Write the frame at once if the server can, else start an ASGI send.

        The direct write skips three coroutines and the per-connection
        framing: a tick to 10,000 clients took 105 ms in the benchmark, and
        about 150 ms when every frame went through send().
        """
        if self._write_frame is not None and self._write_frame(outgoing.frame):
            self.words_delivered += 1
            return
        pending = start_eagerly(self.base_send(outgoing.message))
        self.words_delivered += 1
        if pending is not None:
            self._pending_send = pending
            pending.add_done_callback(self._send_done)

    def _send_done(self, task: asyncio.Task[None]) -> None:
        """Send the queued frames once a send that waited has completed."""
        self._pending_send = None
        if task.cancelled() or task.exception() is not None:
            return
        while self._backlog and self._pending_send is None and not self._closing:
            try:
                self._send(self._backlog.pop(0))
            except OSError as exc:
                # The socket closed meanwhile, and its disconnect event follows.
                # Raised here, the error would reach the event loop's handler.
                logger.debug("send to %s failed: %r", self.connection_id, exc)
                self._backlog = None

    def close_soon(self, code: int) -> None:
        """Start closing the connection with code, without waiting for the socket."""
        self._closing = True
        self._backlog = None
        services.fanout.discard(self)
        closing = start_eagerly(self._close_unless_gone(code))
        if closing is not None:
            self._close_task = closing

    async def _close_unless_gone(self, code: int) -> None:
        """Send the close frame, and log the failure for a client already gone.

        For a socket that closed before the consumer handled its
        websocket.disconnect event, the server's send() raises OSError
        (uvicorn raises ClientDisconnected). That event still follows and
        runs disconnect(). Raising would stop close_clients() from closing
        the other clients.
        """
        try:
            await self.close(code=code)
        except OSError as exc:
            logger.debug(
                "closing %s with code %s failed: %r",
                self.connection_id,
                code,
                exc,
            )

    @property
    def _client(self) -> str | None:
        return client_address(self.scope)

    def _new_record(self) -> Connection:
        user_agent = scope_header(self.scope, b"user-agent") or ""
        return Connection(
            id=self.connection_id,
            opened_at=self.opened_at,
            client_address=self._client,
            user_agent=user_agent[:512],
            via=client_via(self.scope),
        )
