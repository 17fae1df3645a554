"""Routes of the user service: the chassis routes, the public API, the internal API."""

from django.urls import include, path

from chassis.urls import chassis_urlpatterns, handlers

urlpatterns = [
    *chassis_urlpatterns(),
    path("api/", include("accounts.urls")),
    path("internal/", include("accounts.internal_urls")),
]

globals().update(handlers)
