from django.urls import path

from . import views

urlpatterns = [
    path("ping/", views.ping),
    path("products/", views.ProductList.as_view()),
]
