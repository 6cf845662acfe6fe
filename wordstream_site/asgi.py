"""
ASGI entry point: HTTP goes to Django, /ws to the word consumer.

Servers load `wordstream_site.asgi:application`.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wordstream_site.settings")
# Set up Django before importing code that uses models.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from streaming.handshake import HandshakeValidator  # noqa: E402
from streaming.lifespan import ServicesLifespan  # noqa: E402
from streaming.routing import websocket_urlpatterns  # noqa: E402

application = ServicesLifespan(
    ProtocolTypeRouter(
        {
            "http": django_application,
            "websocket": HandshakeValidator(URLRouter(websocket_urlpatterns)),
        }
    )
)
