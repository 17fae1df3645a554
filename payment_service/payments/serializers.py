"""Input serializers (bounded, validated) and output serializers of the payment API.

Validation messages never quote the submitted card number or CVC.
"""

from __future__ import annotations

import re

from django.core.validators import RegexValidator
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chassis.errors import ErrorOutput
from chassis.fields import StrictCharField

from . import cards
from .models import Charge, ChargeSettlement, LedgerEntry, PaymentMethod, Refund

MAX_AMOUNT_CENTS = 10**9
MAX_CUSTOMER_ID = 2**63 - 1
ORDER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_:.-]{1,64}$")
ORDER_ID_MESSAGE = "Use 1 to 64 characters among letters, digits, '_', ':', '.' and '-'."


# ---------------------------------------------------------------- inputs


class PaymentMethodCreateInput(serializers.Serializer):
    card_number = StrictCharField(
        max_length=30, help_text="12 to 19 digits; spaces and dashes are ignored. Never stored."
    )
    exp_month = serializers.IntegerField(min_value=1, max_value=12)
    exp_year = serializers.IntegerField(min_value=2000, max_value=2100, help_text="Four digits, e.g. 2030.")
    cvc = StrictCharField(min_length=3, max_length=4, help_text="3 digits (4 for American Express). Never stored.")

    @sensitive_variables("value")
    def validate_card_number(self, value: str) -> str:
        try:
            return cards.normalise(value)
        except cards.InvalidCardNumber as exc:
            raise serializers.ValidationError(str(exc)) from None

    @sensitive_variables("value")
    def validate_cvc(self, value: str) -> str:
        if not value.isascii() or not value.isdigit():
            raise serializers.ValidationError("The CVC contains digits only.")
        return value

    @sensitive_variables("attrs")
    def validate(self, attrs: dict) -> dict:
        today = timezone.now().date()
        if attrs["exp_year"] < today.year:
            raise serializers.ValidationError({"exp_year": ["This card has expired."]})
        if attrs["exp_year"] == today.year and attrs["exp_month"] < today.month:
            raise serializers.ValidationError({"exp_month": ["This card has expired."]})
        expected = cards.cvc_length(cards.brand_of(attrs["card_number"]))
        if len(attrs["cvc"]) != expected:
            raise serializers.ValidationError({"cvc": [f"The CVC of this card has {expected} digits."]})
        return attrs


@extend_schema_field(
    {"oneOf": [{"type": "string", "maxLength": 64, "pattern": ORDER_ID_PATTERN.pattern}, {"type": "integer"}]}
)
class OrderIdField(serializers.CharField):
    """An order id from order_service (an integer or a UUID), kept as a string; a string or an integer only."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("validators", [RegexValidator(ORDER_ID_PATTERN, ORDER_ID_MESSAGE)])
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            self.fail("invalid")
        return super().to_internal_value(str(data))


class ChargeCreateInput(serializers.Serializer):
    order_id = OrderIdField()
    customer_id = serializers.IntegerField(min_value=1, max_value=MAX_CUSTOMER_ID)
    payment_method = StrictCharField(max_length=64)
    amount_cents = serializers.IntegerField(min_value=1, max_value=MAX_AMOUNT_CENTS)
    currency = serializers.RegexField(
        r"^[A-Za-z]{3}$", max_length=3, error_messages={"invalid": "Use a 3-letter ISO 4217 code, e.g. EUR."}
    )

    def validate_currency(self, value: str) -> str:
        return value.upper()


class RefundCreateInput(serializers.Serializer):
    amount_cents = serializers.IntegerField(
        min_value=1, max_value=MAX_AMOUNT_CENTS, required=False, help_text="Omit to refund what remains."
    )
    reason = StrictCharField(max_length=200)


class ChargeSettleInput(serializers.Serializer):
    charge_key = serializers.RegexField(
        r"^[A-Za-z0-9._:-]{8,128}$",
        max_length=128,
        help_text="The Idempotency-Key the charge was (or may have been) sent with.",
        error_messages={"invalid": "Use 8 to 128 characters among letters, digits, '.', '_', ':' and '-'."},
    )
    order_id = OrderIdField()
    reason = StrictCharField(max_length=200)


class OrderIdQuery(serializers.Serializer):
    order_id = OrderIdField(required=False)


class OrderIdRequiredQuery(serializers.Serializer):
    order_id = OrderIdField()


# ---------------------------------------------------------------- outputs


class PaymentMethodOutput(serializers.ModelSerializer):
    class Meta:
        model = PaymentMethod
        fields = ["token", "brand", "last4", "exp_month", "exp_year"]


class RefundOutput(serializers.ModelSerializer):
    charge = serializers.UUIDField(source="charge_id")
    currency = serializers.CharField(source="charge.currency")

    class Meta:
        model = Refund
        fields = ["id", "charge", "amount_cents", "currency", "reason", "created_at"]


class ChargeRefundOutput(serializers.ModelSerializer):
    class Meta:
        model = Refund
        fields = ["id", "amount_cents", "reason", "created_at"]


class ChargeResultOutput(serializers.ModelSerializer):
    """What a charge request answered; it never changes, so a replay returns the same body."""

    payment_method = serializers.CharField(source="payment_method.token")
    decline_code = serializers.CharField(allow_blank=True)

    class Meta:
        model = Charge
        fields = [
            "id",
            "order_id",
            "customer_id",
            "payment_method",
            "amount_cents",
            "currency",
            "status",
            "decline_code",
            "created_at",
        ]


class ChargeOutput(ChargeResultOutput):
    """A charge as it is now: its card, what has been refunded, and each refund."""

    card_brand = serializers.CharField(source="payment_method.brand")
    card_last4 = serializers.CharField(source="payment_method.last4")
    refunds = ChargeRefundOutput(many=True)

    class Meta(ChargeResultOutput.Meta):
        fields = [*ChargeResultOutput.Meta.fields, "card_brand", "card_last4", "refunded_cents", "refunds"]


class ChargeReconciliationOutput(serializers.ModelSerializer):
    """What the audit needs of a charge."""

    class Meta:
        model = Charge
        fields = ["id", "order_id", "status", "amount_cents", "refunded_cents", "currency", "created_at"]


class ChargeSettlementOutput(serializers.ModelSerializer):
    """What a settlement did: VOIDED (nothing was charged), REFUNDED, NOT_CAPTURED or ALREADY_REFUNDED."""

    charge = serializers.UUIDField(source="charge_id", allow_null=True)
    refund = serializers.UUIDField(source="refund_id", allow_null=True)
    refunded_cents = serializers.SerializerMethodField()

    class Meta:
        model = ChargeSettlement
        fields = ["charge_key", "order_id", "outcome", "charge", "refund", "refunded_cents", "reason", "created_at"]

    def get_refunded_cents(self, settlement: ChargeSettlement) -> int:
        """What this settlement gave back (0 unless REFUNDED)."""
        return settlement.refund.amount_cents if settlement.refund_id else 0


class LedgerEntryOutput(serializers.ModelSerializer):
    charge = serializers.UUIDField(source="charge_id")
    refund = serializers.UUIDField(source="refund_id", allow_null=True)
    order_id = serializers.CharField(source="charge.order_id")

    class Meta:
        model = LedgerEntry
        fields = ["id", "kind", "order_id", "charge", "refund", "customer_id", "amount_cents", "currency", "created_at"]


class DeclinedOutput(ErrorOutput):
    """A 402: the card was declined; the recorded charge is in ``charge``."""

    charge = ChargeResultOutput()


class RefundExceedsOutput(ErrorOutput):
    refundable_cents = serializers.IntegerField(required=False)
