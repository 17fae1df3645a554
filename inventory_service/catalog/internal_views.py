"""The internal API: reservations for order_service's checkout saga, reconciliation for the audit.

Callers authenticate with a service token: ``order`` for reservations (and
for the periodic expiry its scheduler triggers), ``dashboard`` for reconciliation.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from chassis.auth import ServiceOnly
from chassis.idempotency import idempotency_key_from
from chassis.pagination import ReconciliationPagination

from . import selectors, services
from .serializers import (
    ReservationCreateInput,
    ReservationListQuery,
    ReservationOutput,
    ReservationReconciliationOutput,
    ReservationReconciliationQuery,
    ReservationsExpiredOutput,
    StockReconciliationOutput,
)
from .views import InputFormMixin, errors, paginated

OrderServiceOnly = ServiceOnly.allow("order")


def _with_header_key(request: Request):
    """The body, with ``idempotency_key`` taken from the ``Idempotency-Key`` header when the body has none."""
    data = request.data
    header_key = idempotency_key_from(request, required=False)
    if header_key is None or not isinstance(data, Mapping):
        return data
    body_key = data.get("idempotency_key")
    if body_key in (None, ""):
        return {**data, "idempotency_key": header_key}
    if body_key != header_key:
        raise ValidationError({"idempotency_key": ["Differs from the Idempotency-Key header; send one key."]})
    return data


class ReservationListCreateApi(InputFormMixin, APIView):
    """Reserve stock for an order, all lines or none; or list the reservations of one order.

    POST: 201 with the new reservation (HELD until `expires_at`); 200 with the same
    reservation when the same `idempotency_key` comes back with the same order
    and lines; 409 `idempotency_conflict` when it comes with different ones;
    409 `insufficient_stock` (nothing reserved); 400 `unknown_sku`.

    GET `?order_id=`: what inventory holds for that order, whatever its status.
    order_service asks this when the answer to a reservation was lost, so that
    its compensation can release a hold it never heard of.
    """

    permission_classes = [OrderServiceOnly]
    input_serializers = {"POST": ReservationCreateInput}
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    @extend_schema(
        operation_id="reservations_list",
        tags=["internal"],
        parameters=[ReservationListQuery],
        responses={200: ReservationOutput(many=True), **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = ReservationListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        reservations = selectors.reservation_list_for_order(order_id=query.validated_data["order_id"])
        return paginated(self, request, reservations, ReservationOutput)

    @extend_schema(
        operation_id="reservations_create",
        tags=["internal"],
        request=ReservationCreateInput,
        responses={
            201: ReservationOutput,
            200: OpenApiResponse(ReservationOutput, description="Replay of an earlier request."),
            **errors(400, 401, 403, 409, 503),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = ReservationCreateInput(data=_with_header_key(request))
        serializer.is_valid(raise_exception=True)
        reservation, created = services.reservation_create(**serializer.validated_data)
        return Response(
            ReservationOutput(reservation).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class ReservationDetailApi(APIView):
    """One reservation with its lines and total."""

    permission_classes = [OrderServiceOnly]

    @extend_schema(
        operation_id="reservations_retrieve",
        tags=["internal"],
        responses={200: ReservationOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, reservation_id: uuid.UUID) -> Response:
        return Response(ReservationOutput(selectors.reservation_get(reservation_id=reservation_id)).data)


class ReservationCommitApi(APIView):
    """HELD → COMMITTED: the reserved units are sold. Committing again answers the same.

    409 `reservation_not_held` when it was released, returned or expired. A HELD
    reservation past `expires_at` is still committed if the sweeper has not
    expired it yet.
    """

    permission_classes = [OrderServiceOnly]

    @extend_schema(
        operation_id="reservations_commit",
        tags=["internal"],
        request=None,
        responses={200: ReservationOutput, **errors(401, 403, 404, 409, 503)},
    )
    def post(self, request: Request, reservation_id: uuid.UUID) -> Response:
        reservation = services.reservation_commit(reservation_id=reservation_id)
        return Response(ReservationOutput(reservation).data)


class ReservationReleaseApi(APIView):
    """Give the units back: HELD → RELEASED, COMMITTED → RETURNED. Releasing again answers the same.

    A reservation already RELEASED, RETURNED or EXPIRED is answered unchanged.
    """

    permission_classes = [OrderServiceOnly]

    @extend_schema(
        operation_id="reservations_release",
        tags=["internal"],
        request=None,
        responses={200: ReservationOutput, **errors(401, 403, 404, 503)},
    )
    def post(self, request: Request, reservation_id: uuid.UUID) -> Response:
        reservation = services.reservation_release(reservation_id=reservation_id)
        return Response(ReservationOutput(reservation).data)


class ReservationsExpireApi(APIView):
    """Expire every HELD reservation past its `expires_at` now: its units go back to available.

    The same work as `manage.py expire_reservations`, for order_service's
    scheduler (Celery beat) to trigger every few seconds. Safe to call at any
    time, from several places at once.
    """

    permission_classes = [OrderServiceOnly]

    @extend_schema(
        operation_id="reservations_expire",
        tags=["internal"],
        request=None,
        responses={200: ReservationsExpiredOutput, **errors(401, 403, 503)},
    )
    def post(self, request: Request) -> Response:
        expired = services.reservations_expire(now=timezone.now())
        return Response(ReservationsExpiredOutput({"expired": expired}).data)


# --- reconciliation (the audit) -------------------------------------------------------------


DashboardOnly = ServiceOnly.allow("dashboard")


class StockReconciliationApi(APIView):
    """Every product's stock counters, by sku, for the audit (`initial + restocked = available + reserved + sold`)."""

    permission_classes = [DashboardOnly]
    pagination_class = ReconciliationPagination

    @extend_schema(
        operation_id="reconciliation_stock_list",
        tags=["internal"],
        responses={200: StockReconciliationOutput(many=True), **errors(401, 403, 404)},
    )
    def get(self, request: Request) -> Response:
        return paginated(self, request, selectors.stock_reconciliation_list(), StockReconciliationOutput)


class ReservationReconciliationApi(APIView):
    """Every reservation with its status, total and lines, oldest first, for the audit to join with orders."""

    permission_classes = [DashboardOnly]
    pagination_class = ReconciliationPagination

    @extend_schema(
        operation_id="reconciliation_reservations_list",
        tags=["internal"],
        parameters=[ReservationReconciliationQuery],
        responses={200: ReservationReconciliationOutput(many=True), **errors(400, 401, 403, 404)},
    )
    def get(self, request: Request) -> Response:
        query = ReservationReconciliationQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        reservations = selectors.reservation_reconciliation_list(**query.validated_data)
        return paginated(self, request, reservations, ReservationReconciliationOutput)
