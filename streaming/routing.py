"""WebSocket routes."""

from django.urls import path

from .consumers import WordConsumer

websocket_urlpatterns = [
    path("ws", WordConsumer.as_asgi()),
]
