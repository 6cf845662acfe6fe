"""Resuming a stream after a reconnect: what a client missed, from the history.

A client names the last word it saw by its epoch and seq, as `?since=<seq>&
epoch=<epoch>` on /ws or /api/words, or as the Last-Event-ID `<epoch>:<seq>`
that a browser's EventSource sends on /api/words. It first gets a notice,
`{"recovered": true, "words": N, ...}` or `{"recovered": false, "reason": ...}`,
then the N words it missed, then the live stream.
"""

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from redis.exceptions import RedisError

from .history import History, Word

logger = logging.getLogger(__name__)


class Reason:
    """The reasons a recovery notice gives when a stream cannot be recovered."""

    # The epoch differs: the history was lost, or the client saw another one.
    EPOCH_CHANGED = "epoch changed"
    # Words after since have already left the history.
    TOO_OLD = "too old"
    # since is not a non-negative integer, or the epoch is missing.
    INVALID = "invalid resume point"
    # The history could not be read.
    UNAVAILABLE = "history unavailable"


@dataclass(frozen=True)
class ResumePoint:
    epoch: str
    # The last seq the client received, or None when it sent an invalid one.
    since: int | None


def resume_point_from_query(query_string: bytes) -> ResumePoint | None:
    """Read since and epoch from a query string; None when since is absent."""
    query = parse_qs(query_string.decode("latin-1"))
    if "since" not in query:
        return None
    epoch = query.get("epoch", [""])[0]
    return ResumePoint(epoch, _parse_seq(query["since"][0]) if epoch else None)


def resume_point_from_event_id(last_event_id: str | None) -> ResumePoint | None:
    """Read a Last-Event-ID of the form <epoch>:<seq>; None when absent."""
    if not last_event_id:
        return None
    epoch, _, seq = last_event_id.rpartition(":")
    return ResumePoint(epoch, _parse_seq(seq) if epoch else None)


def _parse_seq(value: str) -> int | None:
    # str.isdigit() also accepts digits such as "²" that int() rejects.
    return int(value) if value.isascii() and value.isdigit() else None


def last_seen(point: ResumePoint) -> Word | None:
    """Return a stand-in for the word the client saw last, for deduplication."""
    if point.since is None:
        return None
    return Word("", point.since, 0, point.epoch)


async def recover(
    history: History, point: ResumePoint
) -> tuple[dict[str, Any], list[Word]]:
    """Return the notice to send first and the words the client missed."""
    if point.since is None:
        return _not_recovered(Reason.INVALID, ""), []
    try:
        recovery = await history.since(point.since)
    except (RedisError, OSError) as exc:
        logger.warning("reading the history failed: %s", exc)
        return _not_recovered(Reason.UNAVAILABLE, ""), []
    if recovery.epoch != point.epoch:
        return _not_recovered(Reason.EPOCH_CHANGED, recovery.epoch), []
    if point.since > (recovery.newest_seq or 0):
        # No client has seen a seq that the history has not recorded yet.
        return _not_recovered(Reason.INVALID, recovery.epoch), []
    if not recovery.is_complete(point.since):
        return _not_recovered(Reason.TOO_OLD, recovery.epoch), []
    notice = {
        "recovered": True,
        "words": len(recovery.words),
        "since": point.since,
        "epoch": recovery.epoch,
    }
    return notice, recovery.words


def _not_recovered(reason: str, epoch: str) -> dict[str, Any]:
    return {"recovered": False, "reason": reason, "epoch": epoch}


def is_newer(word: Word, last: Word | None) -> bool:
    """Return False for a word the client already has from the same epoch."""
    return last is None or word.epoch != last.epoch or word.seq > last.seq
