"""Internal routes (service tokens only), mounted under ``/internal/``."""

from django.urls import path

from . import internal_views as views

urlpatterns = [
    path("reservations/", views.ReservationListCreateApi.as_view(), name="reservation-create"),
    path("reservations/expire/", views.ReservationsExpireApi.as_view(), name="reservations-expire"),
    path("reservations/<uuid:reservation_id>/", views.ReservationDetailApi.as_view(), name="reservation-detail"),
    path("reservations/<uuid:reservation_id>/commit/", views.ReservationCommitApi.as_view(), name="reservation-commit"),
    path(
        "reservations/<uuid:reservation_id>/release/", views.ReservationReleaseApi.as_view(), name="reservation-release"
    ),
]

urlpatterns += [
    path("reconciliation/stock/", views.StockReconciliationApi.as_view(), name="reconciliation-stock"),
    path(
        "reconciliation/reservations/", views.ReservationReconciliationApi.as_view(), name="reconciliation-reservations"
    ),
]
