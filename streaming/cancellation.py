"""Cancellation of background tasks whose clients may swallow it."""

import asyncio


def cancel_requested() -> bool:
    """Return True if the running task has been asked to cancel.

    A client library can catch a cancellation while it waits on Redis, and
    then return or raise another error in its place: channels-redis did so
    during a server's shutdown. A loop that checks this stops at its next
    step anyway.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
