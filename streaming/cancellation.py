"""Cancellation of tasks whose awaits may swallow it."""

import asyncio


def raise_if_cancel_requested(cause: BaseException | None = None) -> None:
    """Raise CancelledError if the running task has been asked to cancel.

    A client library can catch a cancellation while it waits on Redis, and
    then return or raise another error in its place: channels-redis did so
    during a server's shutdown. On Python 3.11, asyncio.wait_for() returns
    the result of an awaitable that finished in the same step as the
    cancellation. A loop that calls this at each step, and where it catches
    such errors, stops anyway. cause is the error that took the
    cancellation's place, if any.
    """
    task = asyncio.current_task()
    if task is None or task.cancelling() == 0:
        return
    if cause is None:
        raise asyncio.CancelledError
    raise asyncio.CancelledError from cause
