"""runserver that starts the streaming services as soon as the server runs.

daphne sends no lifespan events, so without this the word source would wait
for the first request. The autoreloader's parent process never runs the
server, so only the serving child starts them.
"""

import asyncio
import logging
from typing import Any

from daphne.management.commands.runserver import Command as DaphneRunserverCommand

from streaming.services import services

logger = logging.getLogger(__name__)


class Command(DaphneRunserverCommand):
    def inner_run(self, *args: Any, **options: Any) -> None:
        from twisted.internet import defer, reactor

        def start() -> None:
            asyncio.ensure_future(services.start())

        def stop() -> defer.Deferred:
            return defer.Deferred.fromFuture(asyncio.ensure_future(services.stop()))

        reactor.callWhenRunning(start)
        reactor.addSystemEventTrigger("before", "shutdown", stop)
        super().inner_run(*args, **options)
