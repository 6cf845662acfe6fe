"""Connection statistics for the admin overview, computed in the database."""

from dataclasses import dataclass
from datetime import timedelta

from django.db import connection as db_connection
from django.db.models import Avg
from django.utils import timezone

from .models import Connection, ConnectionState

# The maximum number of clients connected at once: a running sum over opens (+1) and
# closes (-1) in time order. At equal times closes count first, so a client
# that replaced another at the same instant does not raise the peak.
PEAK_CONCURRENT_SQL = """
SELECT COALESCE(MAX(running), 0) FROM (
    SELECT SUM(delta) OVER (
        ORDER BY at, delta ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS running
    FROM (
        SELECT opened_at AS at, 1 AS delta FROM {table}
        UNION ALL
        SELECT closed_at AS at, -1 AS delta FROM {table} WHERE closed_at IS NOT NULL
    ) AS events
) AS totals
"""


@dataclass(frozen=True)
class ConnectionOverview:
    active_now: int
    peak_concurrent: int
    connections_today: int
    average_duration: timedelta | None


def peak_concurrent() -> int:
    table = db_connection.ops.quote_name(Connection._meta.db_table)
    with db_connection.cursor() as cursor:
        cursor.execute(PEAK_CONCURRENT_SQL.format(table=table))
        return int(cursor.fetchone()[0])


def connection_overview() -> ConnectionOverview:
    """Return the figures the admin shows above the connection list.

    "Today" starts at midnight in the current time zone (TIME_ZONE).
    """
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    finished = Connection.objects.exclude(duration=None)
    return ConnectionOverview(
        active_now=Connection.objects.filter(state=ConnectionState.OPEN).count(),
        peak_concurrent=peak_concurrent(),
        connections_today=Connection.objects.filter(opened_at__gte=midnight).count(),
        average_duration=finished.aggregate(average=Avg("duration"))["average"],
    )
