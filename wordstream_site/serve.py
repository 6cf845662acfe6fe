"""Run the production server: uvicorn, configured from the environment.

`make serve` and the Docker image both start the server with
`python -m wordstream_site.serve`, so they run the same command with the
same options. Environment: HOST (127.0.0.1), PORT (8000), WEB_CONCURRENCY
(server processes, 1), and the Django settings' variables.
"""

import logging
import os
import sys

import uvicorn
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

# Connections the kernel queues while the server accepts: thousands of
# clients reconnecting at once overflow a short backlog (daphne's is 50).
BACKLOG = 4096


def server_options() -> dict[str, object]:
    """Return uvicorn's options, read from the environment and the settings."""
    from django.conf import settings

    workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
    if workers > 1 and not settings.REDIS_URL:
        raise ImproperlyConfigured(
            f"WEB_CONCURRENCY={workers} needs REDIS_URL: without Redis each "
            "process would stream and count on its own"
        )
    return {
        "host": os.environ.get("HOST", "127.0.0.1"),
        "port": int(os.environ.get("PORT", "8000")),
        "workers": workers,
        # The sans-I/O websockets protocol costs the least memory and time
        # per connection of uvicorn's implementations.
        "ws": "websockets-sansio",
        # A word frame is about 60 bytes: compression saves nothing and costs
        # about three times the memory per connection.
        "ws_per_message_deflate": False,
        "lifespan": "on",
        "backlog": BACKLOG,
        "access_log": False,
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(settings.TRUSTED_PROXIES),
        "timeout_graceful_shutdown": 10,
    }


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wordstream_site.settings")
    import django

    django.setup()
    try:
        options = server_options()
    except (ImproperlyConfigured, ValueError) as exc:
        sys.exit(f"cannot start the server: {exc}")
    logger.info("starting uvicorn on %s:%s", options["host"], options["port"])
    uvicorn.run("wordstream_site.asgi:application", **options)


if __name__ == "__main__":
    main()
