"""Thin views of the orders API: validate, call one service or selector, serialize."""

from __future__ import annotations

import logging

import jwt
from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, mixins, status
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.response import Response
from rest_framework.views import APIView

from chassis import auth, browsable
from chassis.auth import IsLabUser, ServiceOnly
from chassis.errors import ErrorOutput, Forbidden, InvalidRequest
from chassis.idempotency import HEADER as IDEMPOTENCY_HEADER
from chassis.lab.views import IsLabAdmin
from chassis.pagination import ReconciliationPagination

from . import broker, lab, selectors, services
from .models import Order
from .saga.repair import order_extra_charges_refund
from .serializers import (
    ChargeRepairInput,
    ChargeRepairOutput,
    OrderCreateInput,
    OrderListQuery,
    OrderOutput,
    OrderUpdateInput,
    ReconciliationListQuery,
    ReconciliationOrderOutput,
    SagaSettingsInput,
    SagaSettingsOutput,
)

log = logging.getLogger(__name__)

REPLAYED_HEADER = "Idempotent-Replayed"

_IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    type=str,
    location=OpenApiParameter.HEADER,
    required=True,
    description="A unique key (8-128 characters) per order; sending it again replays the first answer.",
)
# A checkout refused before its first step because a peer's breaker is open (fail fast).
_RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    type=int,
    location=OpenApiParameter.HEADER,
    response=[503],
    description="On a 503 a checkout got because a peer's circuit breaker is open: the seconds it stays open.",
)
_ERRORS = {
    400: OpenApiResponse(ErrorOutput, description="Invalid input (field messages in `fields`)."),
    401: OpenApiResponse(ErrorOutput, description="No or bad token."),
    404: OpenApiResponse(ErrorOutput, description="No such order (or not yours)."),
}
_SAGA_RESPONSES = {
    202: OpenApiResponse(
        OrderOutput,
        description="Accepted, PENDING: in async mode the worker runs the saga (poll the "
        "order at `Location`); in sync mode the saga could not finish (a peer "
        "is down), its progress is recorded, and a replay or the worker "
        "resumes it.",
    ),
    409: OpenApiResponse(ErrorOutput, description="The order is not in a state that allows this."),
    503: OpenApiResponse(
        ErrorOutput,
        description="A peer service is unavailable; nothing half-done is left unrecorded. A synchronous "
        "checkout while a peer's circuit breaker is open is refused before its first step, with "
        "`Retry-After` (nothing reserved, charged or saved; the body's `peer` and `retry_after` say which "
        "and for how long).",
    ),
}


def _order_response(order: Order, request, *, status_code: int, replayed: bool = False) -> Response:
    order = selectors.order_as_answered(order=order, user=request.user)
    response = Response(OrderOutput(order).data, status=status_code)
    if replayed:
        response[REPLAYED_HEADER] = "true"
    if status_code in (status.HTTP_201_CREATED, status.HTTP_202_ACCEPTED):
        # Where to follow the order (and, with a 202, to poll it until it ends).
        response["Location"] = request.build_absolute_uri(reverse("order-detail", args=[order.pk]))
    return response


SAGA_MODE_HEADER = "X-Lab-Saga-Mode"
LAB_ADMIN_HEADER = "X-Lab-Admin"


def _saga_mode_of(request) -> str | None:
    """The saga mode the lab admin chose for this one order (``X-Lab-Saga-Mode``), or None for the lab's.

    Only the lab admin may choose: a staff user placing the order, or a request that also
    carries ``X-Lab-Admin: <a service token the dashboard signed for order>`` (the dashboard's
    flows place orders as a customer, so their own token cannot say it).
    """
    mode = request.headers.get(SAGA_MODE_HEADER)
    if mode is None:
        return None
    if mode not in ("sync", "async"):
        raise InvalidRequest(f"{SAGA_MODE_HEADER} is 'sync' or 'async', not {mode[:20]!r}.", code="invalid")
    if getattr(request.user, "is_staff", False) or _signed_by_dashboard(request.headers.get(LAB_ADMIN_HEADER, "")):
        return mode
    raise Forbidden(
        f"{SAGA_MODE_HEADER} is the lab admin's choice: place the order as staff, or send {LAB_ADMIN_HEADER} "
        "with a service token the dashboard signed for order.",
        code="not_lab_admin",
    )


def _signed_by_dashboard(token: str) -> bool:
    if not token:
        return False
    try:
        claims = auth.verify(token)
        principal = auth.LabJWTAuthentication().principal_from(claims)
    except (jwt.InvalidTokenError, AuthenticationFailed):
        return False
    return getattr(principal, "is_service", False) and principal.name == "dashboard"


class OrderListCreateApi(mixins.ListModelMixin, generics.GenericAPIView):
    """Your orders, newest first (staff: everybody's, or one customer's); and placing an order."""

    name = "Orders"  # the browsable API's page title
    permission_classes = [IsLabUser]
    serializer_class = OrderOutput
    # Logged in on the browsable API (chassis.browsable), its raw-data form sends the key in the
    # body, generated for each page load, since an HTML form cannot send the header.
    browsable_idempotency_key = True
    browsable_example = {
        "lines": [{"sku": "KB-001", "quantity": 1}],
        "payment_method": "paste your card token (pm_...) from payment_service's /api/payment-methods/",
    }

    def get_serializer_class(self):
        # The browsable API builds its POST form from this.
        return OrderCreateInput if self.request is not None and self.request.method == "POST" else OrderOutput

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Order.objects.none()
        query = OrderListQuery(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return selectors.order_list(user=self.request.user, **query.validated_data)

    @extend_schema(parameters=[OrderListQuery], responses={200: OrderOutput(many=True), **_ERRORS})
    def get(self, request):
        return self.list(request)

    @extend_schema(
        parameters=[_IDEMPOTENCY_PARAMETER, _RETRY_AFTER],
        request=OrderCreateInput,
        responses={
            201: OpenApiResponse(
                OrderOutput, description="Created: CONFIRMED, CANCELLED (see status_reason) or a draft."
            ),
            200: OpenApiResponse(OrderOutput, description="A replay of an earlier request with the same key and body."),
            **_SAGA_RESPONSES,
            **_ERRORS,
        },
    )
    def post(self, request):
        key = browsable.idempotency_key_from(request)
        saga_mode = _saga_mode_of(request)
        data = OrderCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        outcome = services.order_create(
            customer_id=request.user.id, idempotency_key=key, saga_mode=saga_mode, **data.validated_data
        )
        if outcome.replayed:
            code = status.HTTP_200_OK
        else:
            code = status.HTTP_201_CREATED if outcome.finished else status.HTTP_202_ACCEPTED
        return _order_response(outcome.order, request, status_code=code, replayed=outcome.replayed)


class OrderDetailApi(generics.GenericAPIView):
    """One order with its lines and its tracking timeline; a draft's lines and address can change."""

    name = "Order"  # the browsable API's page title
    permission_classes = [IsLabUser]
    serializer_class = OrderOutput

    def get_serializer_class(self):
        return OrderUpdateInput if self.request is not None and self.request.method == "PATCH" else OrderOutput

    @extend_schema(responses={200: OrderOutput, **_ERRORS})
    def get(self, request, order_id: int):
        order = selectors.order_get_for_user(order_id=order_id, user=request.user)
        return Response(OrderOutput(order).data)

    @extend_schema(
        request=OrderUpdateInput,
        responses={200: OrderOutput, 409: _SAGA_RESPONSES[409], 503: _SAGA_RESPONSES[503], **_ERRORS},
    )
    def patch(self, request, order_id: int):
        data = OrderUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        outcome = services.order_update(order_id=order_id, user=request.user, **data.validated_data)
        return _order_response(outcome.order, request, status_code=status.HTTP_200_OK)


class OrderCheckoutApi(generics.GenericAPIView):
    """Run the checkout saga of a draft. The saga's keys derive from the order id, so no header is needed."""

    name = "Order checkout"  # the browsable API's page title
    permission_classes = [IsLabUser]
    serializer_class = OrderOutput

    @extend_schema(request=None, parameters=[_RETRY_AFTER], responses={200: OrderOutput, **_SAGA_RESPONSES, **_ERRORS})
    def post(self, request, order_id: int):
        outcome = services.order_checkout(order_id=order_id, user=request.user)
        code = status.HTTP_200_OK if outcome.finished else status.HTTP_202_ACCEPTED
        return _order_response(outcome.order, request, status_code=code)


class OrderCancelApi(generics.GenericAPIView):
    """Cancel your order: a draft at once; a confirmed order with a full refund and its stock returned."""

    name = "Order cancellation"  # the browsable API's page title
    permission_classes = [IsLabUser]
    serializer_class = OrderOutput

    @extend_schema(request=None, responses={200: OrderOutput, **_SAGA_RESPONSES, **_ERRORS})
    def post(self, request, order_id: int):
        outcome = services.order_cancel(order_id=order_id, user=request.user)
        return _order_response(outcome.order, request, status_code=status.HTTP_200_OK)


class ReconciliationOrderListApi(mixins.ListModelMixin, generics.GenericAPIView):
    """Internal: every order with the reservation, charge and refund ids it holds (the dashboard's audit)."""

    name = "Orders for reconciliation"  # the browsable API's page title
    permission_classes = [ServiceOnly.allow("dashboard")]
    serializer_class = ReconciliationOrderOutput
    pagination_class = ReconciliationPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Order.objects.none()
        query = ReconciliationListQuery(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return selectors.order_list_for_reconciliation(**query.validated_data)

    @extend_schema(
        parameters=[ReconciliationListQuery],
        responses={200: ReconciliationOrderOutput(many=True), 400: ErrorOutput, 403: ErrorOutput},
    )
    def get(self, request):
        return self.list(request)


def _saga_body() -> dict:
    try:
        queues = broker.queue_depths()
    except Exception as exc:  # noqa: BLE001 — the switch must answer even with the broker down
        log.warning("queue depth unavailable: %s", exc)
        queues = None
    return {"service": settings.SERVICE_NAME, **lab.saga_settings(), "broker": broker.transport(), "queues": queues}


class SagaModeApi(APIView):
    """The lab admin's saga switch: run checkouts in the request (sync) or on the worker (async), and its deadline.

    PUT is partial: `{"mode": "async"}` or `{"deadline_seconds": 300}` or both;
    DELETE puts both back to the service's defaults.
    Every web and worker process follows within a second. The deadline applies
    to orders queued from then on.
    """

    name = "Saga mode"  # the browsable API's page title
    permission_classes = [IsLabAdmin]

    @extend_schema(
        summary="The saga mode and deadline",
        responses={200: SagaSettingsOutput, 401: ErrorOutput, 403: ErrorOutput},
    )
    def get(self, request):
        return Response(_saga_body())

    @extend_schema(
        summary="Change the saga mode and/or deadline",
        request=SagaSettingsInput,
        responses={200: SagaSettingsOutput, 400: ErrorOutput, 401: ErrorOutput, 403: ErrorOutput},
    )
    def put(self, request):
        data = SagaSettingsInput(data=request.data)
        data.is_valid(raise_exception=True)
        lab.saga_settings_update(**data.validated_data)
        log.info("saga switch changed: %s", data.validated_data)
        return Response(_saga_body())

    @extend_schema(
        summary="Put the saga mode and deadline back to their defaults",
        responses={200: SagaSettingsOutput, 401: ErrorOutput, 403: ErrorOutput},
    )
    def delete(self, request):
        lab.saga_settings_reset()
        log.info("saga switch reset to its defaults")
        return Response(_saga_body())


class ChargeRepairApi(APIView):
    """The lab admin's repair: refund the charges payment captured for these orders but their saga never recorded.

    Only the unsafe switch `unsafe.charge_retry_new_key` makes such charges; the
    audit names the orders, and a lab's reset repairs them so the audit is green again.
    """

    name = "Charge repair"
    permission_classes = [IsLabAdmin]

    @extend_schema(
        summary="Refund the orders' charges their saga did not record",
        request=ChargeRepairInput,
        responses={200: ChargeRepairOutput, 400: ErrorOutput, 401: ErrorOutput, 403: ErrorOutput, 503: ErrorOutput},
    )
    def post(self, request):
        data = ChargeRepairInput(data=request.data)
        data.is_valid(raise_exception=True)
        repaired = order_extra_charges_refund(order_ids=data.validated_data["order_ids"])
        log.info("repair: %s", repaired)
        return Response({"service": settings.SERVICE_NAME, "repaired": repaired})
