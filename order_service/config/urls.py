"""Routes of the order service: chassis routes (and its own lab switch), the public API, the internal API."""

from django.urls import include, path

from chassis.urls import chassis_urlpatterns, handlers
from orders.views import ChargeRepairApi, SagaModeApi

urlpatterns = [
    *chassis_urlpatterns(),
    path("_lab/saga/", SagaModeApi.as_view(), name="lab-saga"),
    path("_lab/repair/", ChargeRepairApi.as_view(), name="lab-repair"),
    path("api/", include("orders.urls")),
    path("internal/", include("orders.internal_urls")),
]

globals().update(handlers)
