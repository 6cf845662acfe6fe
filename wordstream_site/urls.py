from django.contrib import admin
from django.urls import path, re_path

from streaming import views

urlpatterns = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    path("api/connections", views.connection_events, name="connection-events"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    re_path(
        r"^(?P<name>[\w-]+\.(?:css|js|svg|png|ico|webmanifest))$",
        views.frontend_asset,
        name="frontend-asset",
    ),
]
