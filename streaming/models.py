"""One row per WebSocket connection, for the admin's connection statistics."""

import uuid
from datetime import datetime

from django.db import models


class Via(models.TextChoices):
    DIRECT = "direct", "direct"
    NGINX = "nginx", "nginx"
    NODE = "node", "node"


class ConnectionState(models.TextChoices):
    OPEN = "open", "open"
    CLOSED = "closed", "closed"
    # The server process died before it could record the close.
    LOST = "lost", "lost"


class Connection(models.Model):
    # Chosen by the consumer, so the close can be written without reading the row.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    opened_at = models.DateTimeField(db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    duration = models.DurationField(null=True, blank=True)
    words_delivered = models.PositiveIntegerField(default=0)
    close_code = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(
        max_length=8, choices=ConnectionState, default=ConnectionState.OPEN
    )
    client_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    via = models.CharField(max_length=8, choices=Via, default=Via.DIRECT)
    # The server process that held the connection (host:pid:random).
    process = models.CharField(max_length=128, db_index=True)

    class Meta:
        ordering = ["-opened_at"]
        indexes = [models.Index(fields=["state", "process"])]

    def __str__(self) -> str:
        return f"{self.client_address or '?'} via {self.via} at {self.opened_at:%c}"

    def close(self, closed_at: datetime, close_code: int | None, words: int) -> None:
        """Set the fields a close records, without saving."""
        self.closed_at = closed_at
        self.duration = closed_at - self.opened_at
        self.close_code = close_code
        self.words_delivered = words
        self.state = ConnectionState.CLOSED
