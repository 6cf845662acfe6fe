"""Origin check for WebSocket handshakes.

Browsers send Origin with every WebSocket handshake, and a page on another
site could otherwise open a socket to this server with the visitor's cookies.
"""

import logging
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from .proxy import client_address, scope_header

logger = logging.getLogger(__name__)


def is_allowed_origin(origin: str | None) -> bool:
    """Return True for an origin whose host is in ALLOWED_HOSTS or that is listed
    in CSRF_TRUSTED_ORIGINS, and for no origin when WS_ALLOW_MISSING_ORIGIN is set.
    """
    if origin is None:
        return settings.WS_ALLOW_MISSING_ORIGIN
    if _is_trusted_origin(origin):
        return True
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return False
    domain, _port = split_domain_port(parts.netloc)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def _is_trusted_origin(origin: str) -> bool:
    origin = origin.lower()
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        trusted = trusted.lower()
        if origin == trusted:
            return True
        scheme, _, host = trusted.partition("://*.")
        # "https://*.example.com" trusts every subdomain, as Django's CSRF check does.
        if host and origin.startswith(scheme + "://") and origin.endswith("." + host):
            return True
    return False


class OriginValidator:
    """ASGI middleware that rejects WebSocket handshakes from foreign origins.

    A rejected handshake is closed before it is accepted, which the server
    turns into an HTTP 403 response.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        origin = scope_header(scope, b"origin")
        if is_allowed_origin(origin):
            return await self.application(scope, receive, send)
        logger.warning(
            "rejected WebSocket handshake from origin %r (client %s)",
            origin,
            client_address(scope),
        )
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})
