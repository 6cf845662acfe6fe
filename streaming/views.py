"""HTTP views: the page, its assets, the connection count stream and a health check."""

import logging
import mimetypes
from collections.abc import AsyncIterator
from pathlib import Path

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    StreamingHttpResponse,
)
from django.utils._os import safe_join
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .recovery import resume_point_from_event_id, resume_point_from_query
from .services import services
from .sse import connection_count_events, word_events

logger = logging.getLogger(__name__)

# The page loads nothing from other origins; 'self' also covers ws: and wss:
# to the page's own host in current browsers.
CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"


def file_response(folder: Path, name: str) -> HttpResponse:
    """Return a file inside folder, read whole, or raise Http404.

    The page's files and the admin's assets are a few kilobytes each. Reading
    them whole avoids FileResponse, whose synchronous iterator Django's ASGI
    handler warns about on every request.
    """
    try:
        path = Path(safe_join(folder, name))
    except SuspiciousFileOperation:
        raise Http404(f"{name} not found") from None
    if not path.is_file():
        raise Http404(f"{name} not found")
    content_type, encoding = mimetypes.guess_type(path.name)
    response = HttpResponse(path.read_bytes(), content_type=content_type)
    if encoding:
        response["Content-Encoding"] = encoding
    return response


def _frontend_response(name: str) -> HttpResponse:
    if "/" in name:
        raise Http404(f"{name} not found")
    response = file_response(settings.FRONTEND_DIR, name)
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Cache-Control"] = "no-cache"
    return response


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return _frontend_response("index.html")


@require_GET
def frontend_asset(request: HttpRequest, name: str) -> HttpResponse:
    return _frontend_response(name)


@require_GET
def static_asset(request: HttpRequest, path: str) -> HttpResponse:
    """Serve a collected static file from STATIC_ROOT."""
    return file_response(settings.STATIC_ROOT, path)


# Exempt from CSRF so that a POST gets 405 Method Not Allowed, not 403.
@csrf_exempt
@require_GET
async def connection_events(request: HttpRequest) -> StreamingHttpResponse:
    """Stream the deployment's WebSocket client count as Server-Sent Events."""
    return event_stream_response(connection_count_events(services.presence))


@csrf_exempt
@require_GET
async def word_event_stream(request: HttpRequest) -> StreamingHttpResponse:
    """Stream the words as Server-Sent Events, resuming after Last-Event-ID."""
    point = resume_point_from_event_id(request.headers.get("Last-Event-ID"))
    if point is None:
        point = resume_point_from_query(request.META.get("QUERY_STRING", "").encode())
    events = word_events(
        services.fanout, services.history, point, settings.WS_MAX_BACKLOG
    )
    return event_stream_response(events)


def event_stream_response(events: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # nginx reads this and passes each event on at once instead of buffering.
    response["X-Accel-Buffering"] = "no"
    return response


@csrf_exempt
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


@csrf_exempt
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")
