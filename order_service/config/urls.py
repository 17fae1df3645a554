"""Routes of the order service: chassis routes, the public API, the internal API."""

from django.urls import include, path

from chassis.urls import chassis_urlpatterns, handlers

urlpatterns = [
    *chassis_urlpatterns(),
    path("api/", include("orders.urls")),
    path("internal/", include("orders.internal_urls")),
]

globals().update(handlers)
