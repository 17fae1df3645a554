"""Public API routes (mounted under /api/)."""

from django.urls import path

from . import views

urlpatterns = [
    path("payment-methods/", views.PaymentMethodListCreateApi.as_view(), name="payment-method-list"),
    path("payment-methods/<str:token>/", views.PaymentMethodDeleteApi.as_view(), name="payment-method-delete"),
    path("payments/", views.PaymentListApi.as_view(), name="payment-list"),
    path("payments/<uuid:charge_id>/", views.PaymentDetailApi.as_view(), name="payment-detail"),
    path("ledger/", views.LedgerListApi.as_view(), name="ledger-list"),
]
