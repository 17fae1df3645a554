"""Internal routes, mounted under ``/internal/``: only other lab services may call them."""

from django.urls import path

from . import views

urlpatterns = [
    path("reconciliation/orders/", views.ReconciliationOrderListApi.as_view(), name="reconciliation-orders"),
]
