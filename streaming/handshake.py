"""Checks of WebSocket handshakes before they reach a consumer.

Host is checked against ALLOWED_HOSTS, as Django checks it for HTTP. Origin
is checked because browsers send it with every WebSocket handshake, and a
page on another site could otherwise open a socket to this server with the
visitor's cookies.
"""

import logging
from http import HTTPStatus
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


async def reject_handshake(send: Any, scope: dict[str, Any], status: int) -> None:
    """Reject a WebSocket handshake with an HTTP error status.

    Servers with ASGI's websocket.http.response extension (uvicorn) send the
    status itself; others (daphne) turn a close before accept into a 403.
    """
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = f"{status} {HTTPStatus(status).phrase}\n".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    start = {"type": "websocket.http.response.start", "status": status}
    await send({**start, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


async def not_found(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI application for WebSocket paths that have no route: 404."""
    if (await receive())["type"] == "websocket.connect":
        logger.debug("no WebSocket route for %s", scope.get("path"))
        await reject_handshake(send, scope, 404)


class HandshakeValidator:
    """ASGI middleware that rejects WebSocket handshakes with a Host that is not
    allowed (400) or a foreign Origin (403), and logs each rejection.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        status = self._rejection_status(scope)
        if status is None:
            return await self.application(scope, receive, send)
        if (await receive())["type"] == "websocket.connect":
            await reject_handshake(send, scope, status)

    def _rejection_status(self, scope: dict[str, Any]) -> int | None:
        host = scope_header(scope, b"host") or ""
        domain, _port = split_domain_port(host)
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            logger.warning(
                "rejected WebSocket handshake for host %r (client %s)",
                host,
                client_address(scope),
            )
            return 400
        origin = scope_header(scope, b"origin")
        if not is_allowed_origin(origin):
            logger.warning(
                "rejected WebSocket handshake from origin %r (client %s)",
                origin,
                client_address(scope),
            )
            return 403
        return None
