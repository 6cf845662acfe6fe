"""
Django settings for wordstream.

Every setting that differs between a laptop and a deployment comes from the
environment. The defaults suit a development run: DEBUG on, a SQLite file, and
the in-memory channel layer, so `manage.py runserver` needs no other service.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# The development key is public, so a deployment must set DJANGO_SECRET_KEY.
DEVELOPMENT_SECRET_KEY = "django-insecure-wordstream-development-key"


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(
        f"{name} must be a boolean (1/0, true/false), got {value!r}"
    )


def env_list(name: str, default: str) -> list[str]:
    return [
        item.strip()
        for item in os.environ.get(name, default).split(",")
        if item.strip()
    ]


Number = TypeVar("Number", int, float)


def env_number(
    name: str, default: Number, parse: Callable[[str], Number], expected: str
) -> tuple[str, Number]:
    """Return the variable's text and its value read with parse, or default.

    expected describes a valid value in the error, such as "a whole number".
    """
    value = os.environ.get(name, "")
    try:
        return value, parse(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be {expected}, got {value!r}"
        ) from None


def env_seconds(name: str, default: float) -> float:
    value, seconds = env_number(name, default, float, "a number of seconds")
    if not seconds > 0:
        raise ImproperlyConfigured(f"{name} must be greater than 0, got {value!r}")
    return seconds


def env_int(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    value, number = env_number(name, default, int, "a whole number")
    if number < minimum or (maximum is not None and number > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise ImproperlyConfigured(
            f"{name} must be at least {minimum}{upper}, got {value!r}"
        )
    return number


def env_log_level(name: str, default: str) -> str:
    value = os.environ.get(name, "") or default
    if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ImproperlyConfigured(
            f"{name} must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}"
        )
    return value.upper()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or DEVELOPMENT_SECRET_KEY
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

# DJANGO_HTTPS=1 declares that clients reach the site over HTTPS, usually
# through a proxy that terminates TLS and sets X-Forwarded-Proto. Cookies are
# then sent over HTTPS only, and plain HTTP requests are redirected.
HTTPS = env_bool("DJANGO_HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Health checks and metrics scrapes come over plain HTTP from inside.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 3600, minimum=0)
    # Both bind every subdomain, or future visitors, to HTTPS: opt-in only.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    # The first app to define a command wins: streaming's runserver extends
    # daphne's, which replaces Django's with an ASGI server.
    "streaming",
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "wordstream_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "wordstream_site.asgi.application"

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=60
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# The page the server shows at /: index.html and its assets.
FRONTEND_DIR = BASE_DIR / "shared"

# Seconds between two words.
WORD_INTERVAL = env_seconds("WORD_INTERVAL", 1.0)
# A plain-text file with one word per line to draw from instead of wonderwords'
# built-in lists.
WORD_LIST = os.environ.get("WORD_LIST", "")
# Seconds of recent words kept for clients that resume after a reconnect.
WORD_HISTORY_SECONDS = env_seconds("WORD_HISTORY_SECONDS", 300.0)
# Run a word source candidate inside each server process. With REDIS_URL set,
# a lock in Redis keeps one source active for the whole deployment.
IN_PROCESS_WORD_SOURCE = env_bool("IN_PROCESS_WORD_SOURCE", True)
# Addresses whose X-Forwarded-For and X-Wordstream-Via headers are believed.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", "127.0.0.1,::1")
# Browsers always send Origin; other clients may be allowed to omit it.
WS_ALLOW_MISSING_ORIGIN = env_bool("WS_ALLOW_MISSING_ORIGIN", False)

# Seconds between keepalive pings to each WebSocket client, and to wait for
# its pong: a client that vanished without closing its TCP connection is
# found within their sum. Used by `wordstream_site.serve` (uvicorn).
WS_PING_INTERVAL = env_seconds("WS_PING_INTERVAL", 20.0)
WS_PING_TIMEOUT = env_seconds("WS_PING_TIMEOUT", 20.0)
# Frames a client may fall behind before it is closed with 1013.
WS_MAX_BACKLOG = env_int("WS_MAX_BACKLOG", 30, minimum=1)
# Messages a client may send in one second before it is closed with 1008:
# the stream is one-way, so a client has no reason to send many.
WS_MAX_CLIENT_MESSAGES_PER_SECOND = env_int(
    "WS_MAX_CLIENT_MESSAGES_PER_SECOND", 20, minimum=1
)
# Bytes of the largest message a client may send. The production server
# closes with 1009 past it (serve.py), and daphne drops the connection.
WS_MAX_MESSAGE_SIZE = 4096
DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE = WS_MAX_MESSAGE_SIZE
DAPHNE_WEBSOCKET_MAX_FRAME_SIZE = WS_MAX_MESSAGE_SIZE

LOG_LEVEL = env_log_level("LOG_LEVEL", "INFO")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "streaming": {"level": LOG_LEVEL},
        "wordstream_site": {"level": LOG_LEVEL},
        "django": {"level": "INFO"},
    },
}
