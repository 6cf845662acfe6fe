"""HTTP views: the page, its assets, the connection count stream and a health check."""

import logging
import mimetypes
from pathlib import Path

from django.conf import settings
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    StreamingHttpResponse,
)
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .services import services
from .sse import connection_count_events

logger = logging.getLogger(__name__)

# The page loads nothing from other origins; 'self' also covers ws: and wss:
# to the page's own host in current browsers.
CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"


def frontend_file(name: str) -> Path:
    """Return the path of a file directly inside FRONTEND_DIR, or raise Http404."""
    folder = Path(settings.FRONTEND_DIR).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        raise Http404(f"{name} not found")
    return path


def _serve_frontend_file(name: str) -> FileResponse:
    path = frontend_file(name)
    content_type, _ = mimetypes.guess_type(path.name)
    response = FileResponse(path.open("rb"), content_type=content_type)
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Cache-Control"] = "no-cache"
    return response


@require_GET
def index(request: HttpRequest) -> FileResponse:
    return _serve_frontend_file("index.html")


@require_GET
def frontend_asset(request: HttpRequest, name: str) -> FileResponse:
    return _serve_frontend_file(name)


# Exempt from CSRF so that a POST gets 405 Method Not Allowed, not 403.
@csrf_exempt
@require_GET
async def connection_events(request: HttpRequest) -> StreamingHttpResponse:
    """Stream the deployment's WebSocket client count as Server-Sent Events."""
    response = StreamingHttpResponse(
        connection_count_events(services.presence), content_type="text/event-stream"
    )
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
