"""WSGI entry point, for management tools only: the streams need ASGI."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wordstream_site.settings")
application = get_wsgi_application()
