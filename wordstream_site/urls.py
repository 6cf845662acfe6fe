from django.contrib import admin
from django.urls import path, re_path

from streaming import views

urlpatterns = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    path("api/connections", views.connection_events, name="connection-events"),
    path("api/words", views.word_event_stream, name="word-events"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    re_path(
        r"^(?P<name>[\w-]+\.(?:css|js|svg|png|ico|webmanifest))$",
        views.frontend_asset,
        name="frontend-asset",
    ),
]

# The admin's collected assets are few and small, so the server itself
# serves them, and the proxies pass /static/ on to it. Under runserver with
# DEBUG on, its static files handler serves /static/ before this route.
urlpatterns.append(re_path(r"^static/(?P<path>.*)$", views.static_asset))
