"""Input serializers (what a client may send, with bounds) and output serializers (what it gets back).

Input serializers only validate shapes and bounds; the rules that need the
database (unknown sku, enough stock...) live in ``services``.
"""

from __future__ import annotations

import re

from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chassis.serializers import FastRepresentationMixin

from .models import CURRENCY_PATTERN, SKU_PATTERN, Product, Reservation, ReservationLine, StockMovement

MAX_PRICE_CENTS = 10**9
MAX_INITIAL_STOCK = 1_000_000
MAX_RESTOCK = 100_000
MAX_LINE_QUANTITY = 1000
MAX_LINES = 50
MAX_SKU_LOOKUP = 50
TTL_MIN, TTL_MAX, TTL_DEFAULT = 10, 3600, 900

SKU_MESSAGE = "Use 3 to 32 characters among A-Z, 0-9 and '-'."
sku_validator = RegexValidator(SKU_PATTERN, SKU_MESSAGE)
# The same alphabet as the chassis' Idempotency-Key header.
KEY_PATTERN = r"^[A-Za-z0-9._:-]{8,128}$"
ORDER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
_SKU_PART = r"\s*(?:[A-Za-z0-9-]{3,32}\s*)?"
SKU_LIST_PATTERN = rf"^{_SKU_PART}(?:,{_SKU_PART})*$"


def _normalize_sku(value: str) -> str:
    """Skus are upper case; a lookup or a reservation line may be sent in any case."""
    value = value.strip().upper()
    if not re.match(SKU_PATTERN, value):
        raise serializers.ValidationError(SKU_MESSAGE)
    return value


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean: true or false, not 0, 1 or "yes" (the schema says boolean)."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


@extend_schema_field(
    {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 64, "pattern": ORDER_ID_PATTERN}, {"type": "integer"}]}
)
class OrderIdField(serializers.CharField):
    """An order id: a string, or an integer kept as its decimal string (order_service's ids are integers)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            self.fail("invalid")
        return super().to_internal_value(str(data))


# --- input -----------------------------------------------------------------------------


class ProductListQuery(serializers.Serializer):
    search = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=100,
        default="",
        help_text="Words found in sku, name or description.",
    )
    sku = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=MAX_SKU_LOOKUP * 33,
        # What validate_sku accepts, for the schema: skus in any case, spaces around them, empty parts.
        validators=[RegexValidator(SKU_LIST_PATTERN, f"Each sku: {SKU_MESSAGE}")],
        help_text=f"Exact skus, comma separated (at most {MAX_SKU_LOOKUP}).",
    )
    include_inactive = serializers.BooleanField(
        required=False, default=False, help_text="Staff only: list inactive products too."
    )

    def validate_sku(self, value: str) -> list[str]:
        skus = [part for part in (p.strip() for p in value.split(",")) if part]
        if len(skus) > MAX_SKU_LOOKUP:
            raise serializers.ValidationError(f"Ask for at most {MAX_SKU_LOOKUP} skus at a time.")
        try:
            return sorted({_normalize_sku(sku) for sku in skus})
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(f"Each sku: {SKU_MESSAGE}") from exc


class ProductCreateInput(serializers.Serializer):
    sku = StrictCharField(max_length=32, validators=[sku_validator], help_text="e.g. KB-001; never changes.")
    name = StrictCharField(max_length=200)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True, default="")
    price_cents = serializers.IntegerField(min_value=1, max_value=MAX_PRICE_CENTS)
    # Required although the model defaults to EUR and 0: staff say what they mean.
    currency = StrictCharField(
        max_length=3,
        validators=[RegexValidator(CURRENCY_PATTERN, "Use a 3-letter ISO code in capitals, e.g. EUR.")],
        help_text="3-letter ISO code in capitals, e.g. EUR.",
    )
    active = StrictBooleanField(required=False, default=True)
    initial_stock = serializers.IntegerField(
        min_value=0, max_value=MAX_INITIAL_STOCK, help_text="Units in stock at creation (an INITIAL movement)."
    )


class ProductUpdateInput(serializers.Serializer):
    name = StrictCharField(max_length=200, required=False)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True)
    price_cents = serializers.IntegerField(min_value=1, max_value=MAX_PRICE_CENTS, required=False)
    active = StrictBooleanField(required=False)

    IMMUTABLE = {
        "sku": "The sku cannot be changed; create a new product instead.",
        "currency": "The currency cannot be changed.",
    }

    def validate(self, attrs):
        # A misspelt field would otherwise be ignored and answered 200 as if it had been applied.
        errors = {}
        for key in self.initial_data:
            if key not in self.fields:
                errors[key] = [self.IMMUTABLE.get(key, f"Unknown field; the fields are {', '.join(self.fields)}.")]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class ProductRestockInput(serializers.Serializer):
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_RESTOCK)
    note = StrictCharField(max_length=200, required=False, allow_blank=True, default="")


class ReservationLineInput(serializers.Serializer):
    # In any case (validate_sku upper-cases it); the validator is what the schema shows.
    sku = StrictCharField(max_length=32, validators=[RegexValidator(r"^[A-Za-z0-9-]{3,32}$", SKU_MESSAGE)])
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_LINE_QUANTITY)

    def validate_sku(self, value: str) -> str:
        return _normalize_sku(value)


class ReservationCreateInput(serializers.Serializer):
    order_id = OrderIdField(
        max_length=64,
        validators=[
            RegexValidator(ORDER_ID_PATTERN, "Use 1 to 64 characters among letters, digits, '.', '_', ':' and '-'.")
        ],
        help_text="The order's id, as a string (an integer is accepted and kept as its decimal string).",
    )
    idempotency_key = StrictCharField(
        max_length=128,
        validators=[
            RegexValidator(KEY_PATTERN, "Use 8 to 128 characters among letters, digits, '.', '_', ':' and '-'.")
        ],
        help_text="One key per reservation attempt; may also be sent as the Idempotency-Key header.",
    )
    lines = ReservationLineInput(
        many=True, min_length=1, max_length=MAX_LINES, help_text="Lines naming the same sku are merged (summed)."
    )
    ttl_seconds = serializers.IntegerField(min_value=TTL_MIN, max_value=TTL_MAX, required=False, default=TTL_DEFAULT)


# --- output ----------------------------------------------------------------------------


class ProductListOutput(FastRepresentationMixin, serializers.ModelSerializer):
    available = serializers.IntegerField(source="stock.available", read_only=True)

    class Meta:
        model = Product
        fields = ["sku", "name", "description", "price_cents", "currency", "active", "available"]


class ProductDetailOutput(serializers.ModelSerializer):
    available = serializers.IntegerField(source="stock.available", read_only=True)
    reserved = serializers.IntegerField(source="stock.reserved", read_only=True)
    sold = serializers.IntegerField(source="stock.sold", read_only=True)
    initial = serializers.IntegerField(
        source="stock.initial", read_only=True, help_text="Units the product started with."
    )
    restocked = serializers.IntegerField(source="stock.restocked", read_only=True, help_text="Units added since.")

    class Meta:
        model = Product
        fields = [
            "sku",
            "name",
            "description",
            "price_cents",
            "currency",
            "active",
            "available",
            "reserved",
            "sold",
            "initial",
            "restocked",
            "created_at",
            "updated_at",
        ]


class MovementOutput(serializers.ModelSerializer):
    reservation_id = serializers.UUIDField(read_only=True, allow_null=True)
    order_id = serializers.CharField(source="reservation.order_id", read_only=True, allow_null=True)

    class Meta:
        model = StockMovement
        fields = ["id", "kind", "quantity", "reservation_id", "order_id", "note", "created_at"]


class ReservationLineOutput(serializers.ModelSerializer):
    sku = serializers.CharField(source="product.sku", read_only=True)
    name = serializers.CharField(source="product.name", read_only=True)

    class Meta:
        model = ReservationLine
        fields = ["sku", "name", "quantity", "unit_price_cents", "currency"]


class ReservationOutput(serializers.ModelSerializer):
    lines = ReservationLineOutput(many=True, read_only=True)
    total_cents = serializers.SerializerMethodField()
    currency = serializers.SerializerMethodField()

    class Meta:
        model = Reservation
        fields = [
            "id",
            "order_id",
            "status",
            "expires_at",
            "lines",
            "total_cents",
            "currency",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(OpenApiTypes.INT)
    def get_total_cents(self, reservation: Reservation) -> int:
        return sum(line.quantity * line.unit_price_cents for line in reservation.lines.all())

    @extend_schema_field(OpenApiTypes.STR)
    def get_currency(self, reservation: Reservation) -> str:
        lines = reservation.lines.all()
        return lines[0].currency if lines else ""


class StockReconciliationOutput(serializers.ModelSerializer):
    initial = serializers.IntegerField(source="stock.initial", read_only=True)
    restocked = serializers.IntegerField(source="stock.restocked", read_only=True)
    available = serializers.IntegerField(source="stock.available", read_only=True)
    reserved = serializers.IntegerField(source="stock.reserved", read_only=True)
    sold = serializers.IntegerField(source="stock.sold", read_only=True)

    class Meta:
        model = Product
        fields = ["sku", "initial", "restocked", "available", "reserved", "sold"]


class ReconciliationLineOutput(serializers.ModelSerializer):
    sku = serializers.CharField(source="product.sku", read_only=True)

    class Meta:
        model = ReservationLine
        fields = ["sku", "quantity"]


class ReservationReconciliationOutput(serializers.ModelSerializer):
    lines = ReconciliationLineOutput(many=True, read_only=True)
    total_cents = serializers.SerializerMethodField()

    class Meta:
        model = Reservation
        fields = ["id", "order_id", "status", "total_cents", "lines"]

    @extend_schema_field(OpenApiTypes.INT)
    def get_total_cents(self, reservation: Reservation) -> int:
        return sum(line.quantity * line.unit_price_cents for line in reservation.lines.all())


class ReservationListQuery(serializers.Serializer):
    order_id = StrictCharField(
        max_length=64,
        validators=[
            RegexValidator(ORDER_ID_PATTERN, "Use 1 to 64 characters among letters, digits, '.', '_', ':' and '-'.")
        ],
        help_text="The order whose reservations to list (required).",
    )


class ReservationsExpiredOutput(serializers.Serializer):
    expired = serializers.IntegerField(help_text="How many HELD reservations past their deadline were expired now.")


class ReservationReconciliationQuery(serializers.Serializer):
    order_id = StrictCharField(required=False, max_length=64, help_text="Only the reservations of this order.")
    status = serializers.ChoiceField(choices=Reservation.Status.choices, required=False)
