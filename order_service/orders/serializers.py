"""Input serializers (bounded, strict) and output serializers of the orders API."""

from __future__ import annotations

from rest_framework import serializers

from chassis.fields import CountryField, TextField

from .lab import DEADLINE_MAX, DEADLINE_MIN, MODES
from .models import Order, OrderEvent, OrderLine, OrderStatus

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
PAYMENT_METHOD_PATTERN = r"^pm_[A-Za-z0-9_]{1,61}$"
MAX_LINES = 50
# A shop's "at most 10 per customer": one order cannot take a product's whole stock (20..200 units
# in the demo catalog), nor, with MAX_UNITS_PER_ORDER, empty the shop in a few lines.
MAX_QUANTITY = 10
MAX_UNITS_PER_ORDER = 50


class StrictIntegerField(serializers.IntegerField):
    """An integer that refuses ``true``/``false`` (DRF would read them as 1 and 0)."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class OrderLineInput(serializers.Serializer):
    sku = serializers.RegexField(
        SKU_PATTERN,
        max_length=32,
        error_messages={"invalid": "Use 1 to 32 letters, digits, '.', '_' or '-' (like KB-001)."},
    )
    quantity = StrictIntegerField(
        min_value=1,
        max_value=MAX_QUANTITY,
        error_messages={"max_value": f"At most {MAX_QUANTITY} units of one product per order."},
    )


class ShippingAddressInput(serializers.Serializer):
    """Validated as user_service validates saved addresses: text without control characters, an ISO country."""

    name = TextField(max_length=100)
    line1 = TextField(max_length=200)
    line2 = TextField(max_length=200, required=False, allow_blank=True, default="")
    city = TextField(max_length=100)
    postal_code = TextField(max_length=20)
    country = CountryField(help_text="ISO 3166-1 alpha-2 code, such as FR.")


class _LinesMixin:
    def validate_lines(self, lines):
        skus = [line["sku"] for line in lines]
        repeated = sorted({sku for sku in skus if skus.count(sku) > 1})
        if repeated:
            raise serializers.ValidationError(
                f"Each sku may appear once; add up the quantities of {', '.join(repeated)}."
            )
        units = sum(line["quantity"] for line in lines)
        if units > MAX_UNITS_PER_ORDER:
            raise serializers.ValidationError(
                f"An order holds at most {MAX_UNITS_PER_ORDER} units in all; these lines add up to {units}."
            )
        return lines


class OrderCreateInput(_LinesMixin, serializers.Serializer):
    lines = OrderLineInput(many=True, allow_empty=False, max_length=MAX_LINES)
    payment_method = serializers.RegexField(
        PAYMENT_METHOD_PATTERN,
        max_length=64,
        error_messages={"invalid": "Use a payment method token from payment_service (pm_...)."},
    )
    shipping_address = ShippingAddressInput(required=False, allow_null=True, default=None)
    checkout = serializers.BooleanField(
        default=True, help_text="false saves a draft (PENDING) without running the checkout saga."
    )


class OrderUpdateInput(_LinesMixin, serializers.Serializer):
    schema_requires_one_of = True  # chassis.schema: an anyOf in the OpenAPI schema

    lines = OrderLineInput(many=True, allow_empty=False, max_length=MAX_LINES, required=False)
    shipping_address = ShippingAddressInput(required=False, allow_null=True)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Send lines and/or shipping_address.")
        return attrs


class OrderListQuery(serializers.Serializer):
    customer_id = StrictIntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="Staff only: the orders of one customer."
    )
    status = serializers.ChoiceField(choices=OrderStatus.choices, required=False)


class ReconciliationListQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=OrderStatus.choices, required=False)


class OrderLineOutput(serializers.ModelSerializer):
    line_total_cents = serializers.IntegerField(read_only=True)

    class Meta:
        model = OrderLine
        fields = ["sku", "name", "quantity", "unit_price_cents", "line_total_cents"]


class OrderEventOutput(serializers.ModelSerializer):
    at = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = OrderEvent
        fields = ["status", "step", "note", "at"]


class ShippingAddressOutput(ShippingAddressInput):
    pass


class OrderOutput(serializers.ModelSerializer):
    shipping_address = ShippingAddressOutput(read_only=True, allow_null=True)
    lines = OrderLineOutput(many=True, read_only=True)
    history = OrderEventOutput(source="events", many=True, read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "customer_id",
            "status",
            "status_reason",
            "saga_step",
            "payment_method",
            "shipping_address",
            "currency",
            "total_cents",
            "lines",
            "history",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ReconciliationOrderOutput(serializers.ModelSerializer):
    class Meta:
        model = Order
        fields = [
            "id",
            "customer_id",
            "status",
            "saga_step",
            "total_cents",
            "currency",
            "reservation_id",
            "stock_released",
            "charge_id",
            "charge_outcome_unknown",
            "refund_id",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class SagaSettingsInput(serializers.Serializer):
    """A partial change of the saga switch: only what is sent changes; anything else is refused."""

    mode = serializers.ChoiceField(
        choices=MODES, required=False, help_text="sync: the request runs the saga (201); async: the worker does (202)."
    )
    deadline_seconds = StrictIntegerField(
        min_value=DEADLINE_MIN,
        max_value=DEADLINE_MAX,
        required=False,
        help_text="How long the worker retries a peer that is down before it gives up and compensates.",
    )

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: ["Unknown setting; use mode and/or deadline_seconds."] for name in unknown}
            )
        if not attrs:
            raise serializers.ValidationError("Send mode and/or deadline_seconds.")
        return attrs


class SagaSettingsOutput(serializers.Serializer):
    service = serializers.CharField()
    mode = serializers.ChoiceField(choices=MODES)
    deadline_seconds = serializers.IntegerField()
    broker = serializers.CharField(help_text="redis, or filesystem (the embedded broker, without Redis).")
    queues = serializers.DictField(
        child=serializers.IntegerField(), allow_null=True, help_text="Tasks waiting per queue (Redis only)."
    )


class ChargeRepairInput(serializers.Serializer):
    """The orders whose extra charges to refund (the ids the audit names)."""

    order_ids = serializers.ListField(
        child=StrictIntegerField(min_value=1), min_length=1, max_length=500, help_text="Order ids."
    )


class ChargeRepairOutput(serializers.Serializer):
    service = serializers.CharField()
    repaired = serializers.ListField(child=serializers.DictField(), help_text="Per order: kept, refunded, refused.")
