"""Internal routes for the lab's other services (mounted under /internal/)."""

from django.urls import path

from . import views

urlpatterns = [
    path("charges/", views.ChargeInternalApi.as_view(), name="internal-charges"),
    path("charges/<uuid:charge_id>/refunds/", views.RefundInternalApi.as_view(), name="internal-refunds"),
    path("settlements/", views.ChargeSettleInternalApi.as_view(), name="internal-settlements"),
    path("reconciliation/charges/", views.ChargeReconciliationApi.as_view(), name="reconciliation-charges"),
]
