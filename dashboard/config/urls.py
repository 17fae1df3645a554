"""Routes of the dashboard: health and metrics like every service, the trace collector, the pages."""

from django.urls import include, path

from chassis.health import health
from chassis.metrics import metrics_view

urlpatterns = [
    path("health/", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("collector.urls")),
    path("", include("console.urls")),
]

handler404 = "console.errors.not_found"
handler500 = "console.errors.server_error"
handler403 = "console.errors.forbidden"
handler400 = "console.errors.bad_request"
