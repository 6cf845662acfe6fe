"""Writes connection rows off the hot path, in batches.

Consumers only append to in-memory lists. A background task writes them with
one bulk insert for the opens and one prepared UPDATE run for the closes, in
the thread that database_sync_to_async uses, so no consumer waits on the
database. It writes once no row has arrived for FLUSH_INTERVAL seconds, or
MAX_FLUSH_DELAY seconds after the oldest pending row. A burst of thousands
of connects is thus written after it ends: the database thread's Python
time holds the GIL, which the event loop needs for the handshakes.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from time import monotonic
from typing import Any
from uuid import UUID

from channels.db import database_sync_to_async
from django.db import DatabaseError, transaction
from django.db import connection as db_connection
from django.db.models import DateTimeField, F, Value
from django.utils import timezone

from .models import Connection, ConnectionState

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5
MAX_FLUSH_DELAY = 5.0
# Rows kept for a retry while the database is failing; older ones are dropped.
MAX_PENDING = 100_000


@dataclass
class Close:
    connection_id: UUID
    opened_at: datetime
    closed_at: datetime
    close_code: int | None
    words_delivered: int


class ConnectionRecorder:
    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self._opens: dict[UUID, Connection] = {}
        self._closes: list[Close] = []
        self._stopping = asyncio.Event()
        # Rows that arrived since the last check, and monotonic() when
        # the oldest pending row arrived.
        self._arrived = 0
        self._oldest: float | None = None

    def opened(self, connection: Connection) -> None:
        connection.process = self.process_id
        self._opens[connection.id] = connection
        self._arrive()

    def closed(self, close: Close) -> None:
        self._arrive()
        opened = self._opens.get(close.connection_id)
        if opened is not None:
            # Opened and closed within one batch: a single insert does.
            opened.close(close.closed_at, close.close_code, close.words_delivered)
        else:
            self._closes.append(close)

    def _arrive(self) -> None:
        self._arrived += 1
        if self._oldest is None:
            self._oldest = monotonic()

    async def run(self) -> None:
        """Flush the pending rows when they are due, until stop() is called.

        Cancelling this task instead could lose a batch: a write that is
        still queued for the database thread when its awaiting task is
        cancelled never runs.
        """
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FLUSH_INTERVAL)
            if self._stopping.is_set() or self._flush_due():
                await self.flush()

    def _flush_due(self) -> bool:
        """Return True when no row arrived in the last interval, or the oldest
        pending row has waited MAX_FLUSH_DELAY seconds."""
        quiet = self._arrived == 0
        self._arrived = 0
        if self._oldest is None:
            return False
        return quiet or monotonic() - self._oldest >= MAX_FLUSH_DELAY

    def stop(self) -> None:
        """Make run() return after one more flush."""
        self._stopping.set()

    async def flush(self) -> None:
        """Write the pending rows; on a database error, keep them for the next try."""
        if not self._opens and not self._closes:
            return
        opens, closes = self._opens, self._closes
        self._opens, self._closes = {}, []
        self._oldest = None
        try:
            await write_batch(list(opens.values()), closes)
        except DatabaseError as exc:
            logger.warning("recording %d connections failed: %s", len(opens), exc)
            self._requeue(opens, closes)

    def _requeue(self, opens: dict[UUID, Connection], closes: list[Close]) -> None:
        # The next attempt waits for a quiet interval, or MAX_FLUSH_DELAY.
        if self._oldest is None:
            self._oldest = monotonic()
        opens.update(self._opens)
        self._opens = opens
        self._closes = closes + self._closes
        excess = len(self._opens) + len(self._closes) - MAX_PENDING
        if excess > 0:
            logger.error("dropping %d unrecorded connection events", excess)
            self._closes = self._closes[excess:]


@database_sync_to_async
def write_batch(opens: list[Connection], closes: list[Close]) -> None:
    with transaction.atomic():
        Connection.objects.bulk_create(opens, batch_size=500)
        _write_closes(closes)


CLOSE_FIELDS = ["closed_at", "duration", "close_code", "words_delivered", "state"]


def _write_closes(closes: list[Close]) -> None:
    """Write the closes with one prepared UPDATE run for every row.

    The row needs no read first, because a close carries its opening time
    for the duration. Django's bulk_update builds a CASE expression per
    field and row, which costs more Python time than the UPDATEs themselves
    in the thread that shares the GIL with the event loop.
    """
    if not closes:
        return
    meta = Connection._meta
    fields = [meta.get_field(name) for name in CLOSE_FIELDS] + [meta.pk]
    quote = db_connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields[:-1])
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {assignments} "
        f"WHERE {quote(meta.pk.column)} = %s"
    )
    rows = [_close_values(close) for close in closes]
    params = [
        [
            field.get_db_prep_value(value, db_connection)
            for field, value in zip(fields, row, strict=True)
        ]
        for row in rows
    ]
    with db_connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _close_values(close: Close) -> list[Any]:
    return [
        close.closed_at,
        close.closed_at - close.opened_at,
        close.close_code,
        close.words_delivered,
        ConnectionState.CLOSED,
        close.connection_id,
    ]


def _since_opened(moment: datetime) -> Any:
    return Value(moment, output_field=DateTimeField()) - F("opened_at")


@database_sync_to_async
def mark_lost(processes: list[str]) -> int:
    """Close the open rows of server processes that died; return how many."""
    now = timezone.now()
    rows = Connection.objects.filter(state=ConnectionState.OPEN, process__in=processes)
    return rows.update(
        closed_at=now, duration=_since_opened(now), state=ConnectionState.LOST
    )
