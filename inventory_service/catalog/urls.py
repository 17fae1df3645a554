"""Public routes, mounted under ``/api/``."""

from django.urls import path

from . import views

urlpatterns = [
    path("products/", views.ProductListCreateApi.as_view(), name="product-list"),
    path("products/<str:sku>/", views.ProductDetailApi.as_view(), name="product-detail"),
    path("products/<str:sku>/restock/", views.ProductRestockApi.as_view(), name="product-restock"),
    path("products/<str:sku>/movements/", views.ProductMovementListApi.as_view(), name="product-movements"),
]
