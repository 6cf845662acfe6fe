"""WebSocket routes."""

from django.urls import path, re_path

from .consumers import WordConsumer
from .handshake import not_found

websocket_urlpatterns = [
    path("ws", WordConsumer.as_asgi()),
    re_path(r"", not_found),
]
