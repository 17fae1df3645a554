"""Routes of the payment service: the chassis routes, the public API, the internal API."""

from django.urls import include, path

from chassis.urls import chassis_urlpatterns, handlers

urlpatterns = [
    *chassis_urlpatterns(),
    path("api/", include("payments.urls")),
    path("internal/", include("payments.internal_urls")),
]

globals().update(handlers)
