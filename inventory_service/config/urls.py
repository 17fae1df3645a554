"""Routes of inventory_service: the chassis routes, the public API, the internal API."""

from django.urls import include, path

from chassis.urls import chassis_urlpatterns, handlers

urlpatterns = [
    *chassis_urlpatterns(),
    path("api/", include("catalog.urls")),
    path("internal/", include("catalog.internal_urls")),
]

globals().update(handlers)
