"""Public routes of the orders API, mounted under ``/api/``."""

from django.urls import path

from . import views

urlpatterns = [
    path("orders/", views.OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<int:order_id>/", views.OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<int:order_id>/checkout/", views.OrderCheckoutApi.as_view(), name="order-checkout"),
    path("orders/<int:order_id>/cancel/", views.OrderCancelApi.as_view(), name="order-cancel"),
]
