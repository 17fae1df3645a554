"""Public API of the user service, mounted under /api/ (see docs/contracts.md)."""

from django.urls import path

from . import views

urlpatterns = [
    path("auth/register/", views.RegisterApi.as_view(), name="auth-register"),
    path("auth/login/", views.LoginApi.as_view(), name="auth-login"),
    path("auth/refresh/", views.RefreshApi.as_view(), name="auth-refresh"),
    path("auth/logout/", views.LogoutApi.as_view(), name="auth-logout"),
    path("users/", views.UserListApi.as_view(), name="user-list"),
    path("users/me/", views.MeApi.as_view(), name="me"),
    path("users/me/password/", views.PasswordChangeApi.as_view(), name="me-password"),
    path("users/me/addresses/", views.AddressListApi.as_view(), name="address-list"),
    path("users/me/addresses/<int:address_id>/", views.AddressDetailApi.as_view(), name="address-detail"),
]
