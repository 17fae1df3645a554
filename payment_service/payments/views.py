"""HTTP views of the payment service: thin, one per operation.

Each view checks who is calling, validates its input with an input
serializer, calls one service or selector function and serializes the answer.
Views return plain dicts so the browsable API never re-renders a submitted
card form.
"""

from __future__ import annotations

from uuid import UUID

from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from chassis.auth import IsLabUser, IsStaff, ServiceOnly
from chassis.errors import ErrorOutput, PaymentDeclined
from chassis.idempotency import HEADER as IDEMPOTENCY_HEADER
from chassis.idempotency import idempotency_key_from
from chassis.pagination import ReconciliationPagination

from . import selectors, services
from .models import Charge
from .serializers import (
    ChargeCreateInput,
    ChargeOutput,
    ChargeReconciliationOutput,
    ChargeResultOutput,
    ChargeSettleInput,
    ChargeSettlementOutput,
    DeclinedOutput,
    LedgerEntryOutput,
    OrderIdQuery,
    OrderIdRequiredQuery,
    PaymentMethodCreateInput,
    PaymentMethodOutput,
    RefundCreateInput,
    RefundExceedsOutput,
    RefundOutput,
)

REPLAYED_HEADER = "Idempotent-Replayed"
DECLINE_MESSAGES = {
    "card_declined": "The card was declined.",
    "insufficient_funds": "The card was declined for insufficient funds.",
}

AUTH_ERRORS = {
    401: OpenApiResponse(ErrorOutput, description="No token, or an invalid or expired one."),
    403: OpenApiResponse(ErrorOutput, description="This caller may not use this endpoint."),
}
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description="A unique key (8-128 characters) per operation; a retry with the same key and body replays the answer.",
)
ORDER_ID_PARAMETER = OrderIdQuery  # the schema shows the field's length and pattern


def _order_id_filter(request, *, required: bool) -> str | None:
    serializer = (OrderIdRequiredQuery if required else OrderIdQuery)(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data.get("order_id")


@method_decorator(sensitive_post_parameters("card_number", "cvc"), name="dispatch")
@extend_schema(tags=["payment methods"])
class PaymentMethodListCreateApi(GenericAPIView):
    """Your saved cards. POST tokenises a card: its number and CVC are checked, never stored."""

    name = "Payment methods"
    permission_classes = [IsLabUser]

    def get_serializer_class(self):
        return PaymentMethodCreateInput if self.request.method == "POST" else PaymentMethodOutput

    def get_queryset(self):
        return selectors.payment_method_list(customer_id=self.request.user.id)

    @extend_schema(responses={200: PaymentMethodOutput(many=True), **AUTH_ERRORS})
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(PaymentMethodOutput(page, many=True).data)

    @extend_schema(
        request=PaymentMethodCreateInput,
        responses={201: PaymentMethodOutput, 400: ErrorOutput, **AUTH_ERRORS},
    )
    def post(self, request):
        serializer = PaymentMethodCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        method = services.payment_method_create(
            customer_id=request.user.id,
            card_number=data["card_number"],
            exp_month=data["exp_month"],
            exp_year=data["exp_year"],
        )
        return Response(dict(PaymentMethodOutput(method).data), status=status.HTTP_201_CREATED)


@extend_schema(tags=["payment methods"])
class PaymentMethodDeleteApi(GenericAPIView):
    """Remove one of your saved cards (another customer's card is a 404)."""

    name = "Payment method"
    permission_classes = [IsLabUser]

    @extend_schema(
        parameters=[OpenApiParameter("token", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={204: None, 404: ErrorOutput, **AUTH_ERRORS},
    )
    def delete(self, request, token: str):
        services.payment_method_remove(customer_id=request.user.id, token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["payments"])
class PaymentListApi(GenericAPIView):
    """Charges with their refunds: your own, or everybody's for staff."""

    name = "Payments"
    permission_classes = [IsLabUser]
    serializer_class = ChargeOutput

    def get_queryset(self):
        user = self.request.user
        return selectors.charge_list(customer_id=None if user.is_staff else user.id)

    @extend_schema(responses={200: ChargeOutput(many=True), **AUTH_ERRORS})
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ChargeOutput(page, many=True).data)


@extend_schema(tags=["payments"])
class PaymentDetailApi(GenericAPIView):
    """One charge with its refunds (yours, or any for staff)."""

    name = "Payment"
    permission_classes = [IsLabUser]
    serializer_class = ChargeOutput

    @extend_schema(
        parameters=[OpenApiParameter("charge_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={200: ChargeOutput, 404: ErrorOutput, **AUTH_ERRORS},
    )
    def get(self, request, charge_id: UUID):
        customer_id = None if request.user.is_staff else request.user.id
        charge = selectors.charge_get(charge_id=charge_id, customer_id=customer_id)
        return Response(dict(ChargeOutput(charge).data))


@extend_schema(tags=["ledger"])
class LedgerListApi(GenericAPIView):
    """The append-only ledger of money movements (staff): +amount per capture, -amount per refund."""

    name = "Ledger"
    permission_classes = [IsStaff]
    serializer_class = LedgerEntryOutput

    def get_queryset(self):
        return selectors.ledger_list(order_id=_order_id_filter(self.request, required=False))

    @extend_schema(
        parameters=[ORDER_ID_PARAMETER], responses={200: LedgerEntryOutput(many=True), 400: ErrorOutput, **AUTH_ERRORS}
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(LedgerEntryOutput(page, many=True).data)


@extend_schema(tags=["internal"])
class ChargeInternalApi(GenericAPIView):
    """Internal (order_service): charge a customer's card once per Idempotency-Key; list an order's charges."""

    name = "Charges (internal)"
    permission_classes = [ServiceOnly.allow("order")]

    def get_serializer_class(self):
        return ChargeCreateInput if self.request.method == "POST" else ChargeOutput

    def get_queryset(self):
        return selectors.charge_list_for_order(order_id=_order_id_filter(self.request, required=True))

    @extend_schema(
        parameters=[OrderIdRequiredQuery],
        responses={200: ChargeOutput(many=True), 400: ErrorOutput, **AUTH_ERRORS},
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ChargeOutput(page, many=True).data)

    @extend_schema(
        parameters=[IDEMPOTENCY_PARAMETER],
        request=ChargeCreateInput,
        responses={
            201: ChargeResultOutput,
            400: ErrorOutput,
            402: OpenApiResponse(DeclinedOutput, description="Declined: code card_declined or insufficient_funds."),
            409: OpenApiResponse(ErrorOutput, description="idempotency_conflict: the key was used with another body."),
            **AUTH_ERRORS,
        },
    )
    def post(self, request):
        idempotency_key = idempotency_key_from(request)
        serializer = ChargeCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.charge_create(**serializer.validated_data, idempotency_key=idempotency_key)
        body = dict(ChargeResultOutput(result.charge).data)
        headers = {REPLAYED_HEADER: "true"} if result.replayed else None
        if result.charge.status == Charge.Status.DECLINED:
            code = result.charge.decline_code
            message = DECLINE_MESSAGES.get(code, "The card was declined.")
            raise PaymentDeclined(message, code=code, headers=headers, charge=body)
        return Response(body, status=status.HTTP_201_CREATED, headers=headers)


@extend_schema(tags=["internal"])
class RefundInternalApi(GenericAPIView):
    """Internal (order_service): refund a captured charge, in full (no amount) or in part, once per key."""

    name = "Refunds (internal)"
    permission_classes = [ServiceOnly.allow("order")]
    serializer_class = RefundCreateInput

    @extend_schema(
        parameters=[IDEMPOTENCY_PARAMETER, OpenApiParameter("charge_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        request=RefundCreateInput,
        responses={
            201: RefundOutput,
            400: ErrorOutput,
            404: ErrorOutput,
            409: OpenApiResponse(
                RefundExceedsOutput,
                description="refund_exceeds_charge, charge_not_captured or idempotency_conflict.",
            ),
            **AUTH_ERRORS,
        },
    )
    def post(self, request, charge_id: UUID):
        idempotency_key = idempotency_key_from(request)
        serializer = RefundCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.refund_create(
            charge_id=charge_id,
            amount_cents=serializer.validated_data.get("amount_cents"),
            reason=serializer.validated_data["reason"],
            idempotency_key=idempotency_key,
        )
        headers = {REPLAYED_HEADER: "true"} if result.replayed else None
        return Response(dict(RefundOutput(result.refund).data), status=status.HTTP_201_CREATED, headers=headers)


@extend_schema(tags=["internal"])
class ChargeSettleInternalApi(GenericAPIView):
    """Internal (order_service): settle a charge whose answer was lost, by its key: refund it, or void the key.

    Whatever the charge sent with ``charge_key`` captured is refunded; if nothing
    was charged under it, the key is voided and a charge arriving later with it
    is refused (409 ``charge_voided``). Settling a key again answers the first settlement.
    """

    name = "Settlements (internal)"
    permission_classes = [ServiceOnly.allow("order")]
    serializer_class = ChargeSettleInput

    @extend_schema(
        parameters=[IDEMPOTENCY_PARAMETER],
        request=ChargeSettleInput,
        responses={
            201: ChargeSettlementOutput,
            400: ErrorOutput,
            409: OpenApiResponse(ErrorOutput, description="charge_key_mismatch: the key charged another order."),
            **AUTH_ERRORS,
        },
    )
    def post(self, request):
        idempotency_key = idempotency_key_from(request)
        serializer = ChargeSettleInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.charge_settle(**serializer.validated_data, idempotency_key=idempotency_key)
        headers = {REPLAYED_HEADER: "true"} if result.replayed else None
        body = dict(ChargeSettlementOutput(result.settlement).data)
        return Response(body, status=status.HTTP_201_CREATED, headers=headers)


@extend_schema(tags=["internal"])
class ChargeReconciliationApi(GenericAPIView):
    """Every charge with its status, amount and refunds, oldest first, for the audit (dashboard only)."""

    name = "Charges (reconciliation)"
    permission_classes = [ServiceOnly.allow("dashboard")]
    pagination_class = ReconciliationPagination
    serializer_class = ChargeReconciliationOutput

    def get_queryset(self):
        return selectors.charge_reconciliation_list()

    @extend_schema(
        operation_id="reconciliation_charges_list",
        responses={200: ChargeReconciliationOutput(many=True), **AUTH_ERRORS},
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ChargeReconciliationOutput(page, many=True).data)
