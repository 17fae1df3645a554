"""Only this service's own routes, to check their schema apart from the chassis routes."""

from django.urls import include, path

urlpatterns = [
    path("api/", include("payments.urls")),
    path("internal/", include("payments.internal_urls")),
]
