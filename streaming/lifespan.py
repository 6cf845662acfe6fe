"""ASGI middleware that runs the process's background services."""

import logging
from typing import Any

from .services import services

logger = logging.getLogger(__name__)


class ServicesLifespan:
    """Starts the services on lifespan startup and stops them on shutdown.

    daphne sends no lifespan events, so the services also start before the
    first connection of any kind is handed to the application.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        await services.start()
        return await self.application(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._run_step(services.start, "startup", send)
            elif message["type"] == "lifespan.shutdown":
                await self._run_step(services.stop, "shutdown", send)
                return

    async def _run_step(self, step: Any, name: str, send: Any) -> None:
        try:
            await step()
        except Exception as exc:
            logger.exception("lifespan %s failed", name)
            await send({"type": f"lifespan.{name}.failed", "message": str(exc)})
            raise
        await send({"type": f"lifespan.{name}.complete"})
