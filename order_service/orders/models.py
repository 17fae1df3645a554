"""Orders, their lines (a snapshot of the catalog at checkout) and their timeline.

There is no user table here: ``customer_id`` is the id user_service put in the
token. Money is integer cents. The saga's progress lives on the order itself
(``saga_step`` and the ids it collected from the peers) so that any runner can
resume a checkout or a cancellation from where the last one stopped.
"""

from django.db import models
from django.utils import timezone


class OrderStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    CONFIRMED = "CONFIRMED", "Confirmed"
    SHIPPED = "SHIPPED", "Shipped"
    DELIVERED = "DELIVERED", "Delivered"
    CANCELLED = "CANCELLED", "Cancelled"


class SagaStep(models.TextChoices):
    """Where the checkout saga (or a cancellation's compensations) stands.

    ``none``: a draft, nothing started. ``reserving``/``charging``/``committing``:
    the call to the peer was decided and may have happened (its outcome is not
    recorded yet). ``reserved``/``charged``: the peer's answer is recorded.
    ``compensating``: undoing (refund, then release). ``done``: finished,
    whichever way ``status`` says.
    """

    NONE = "none", "Not started"
    RESERVING = "reserving", "Reserving stock"
    RESERVED = "reserved", "Stock reserved"
    CHARGING = "charging", "Charging"
    CHARGED = "charged", "Charged"
    COMMITTING = "committing", "Committing stock"
    DONE = "done", "Done"
    COMPENSATING = "compensating", "Compensating"


class Order(models.Model):
    customer_id = models.BigIntegerField(db_index=True)
    status = models.CharField(max_length=16, choices=OrderStatus.choices, default=OrderStatus.PENDING, db_index=True)
    status_reason = models.CharField(max_length=255, blank=True, default="")
    # The kind of reason, for machines (metrics): out_of_stock, declined, gave_up, customer...
    status_reason_code = models.CharField(max_length=32, blank=True, default="")
    saga_step = models.CharField(max_length=16, choices=SagaStep.choices, default=SagaStep.NONE)
    # Who runs the saga now (a request, or a worker task by its id): nobody else may until this time has passed.
    saga_lease_until = models.DateTimeField(null=True, blank=True)
    saga_runner = models.CharField(max_length=64, blank=True, default="")
    # In the background, a peer that stays down is retried until then; after, the saga compensates.
    saga_deadline = models.DateTimeField(null=True, blank=True)

    idempotency_key = models.CharField(max_length=128)
    request_fingerprint = models.CharField(max_length=64)

    payment_method = models.CharField(max_length=64)
    shipping_address = models.JSONField(null=True, blank=True)
    total_cents = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, default="EUR")

    reservation_id = models.CharField(max_length=64, blank=True, default="")
    # A reservation was sent and its answer lost: inventory may hold stock for this order we do not know of.
    reservation_outcome_unknown = models.BooleanField(default=False)
    stock_released = models.BooleanField(default=False)
    charge_id = models.CharField(max_length=64, blank=True, default="")
    # A charge was sent and its answer lost: payment may hold a capture we do not know of.
    charge_outcome_unknown = models.BooleanField(default=False)
    refund_id = models.CharField(max_length=64, blank=True, default="")

    # Set when the order is made (as auto_now_add would), or given: an async checkout's deadline counts from it.
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer_id", "idempotency_key"], name="order_unique_customer_idempotency_key"
            ),
            models.CheckConstraint(condition=models.Q(total_cents__gte=0), name="order_total_not_negative"),
        ]
        indexes = [
            models.Index(fields=["customer_id", "-created_at"], name="order_customer_newest"),
            # The periodic jobs: sagas to recover (by step and lease), orders to ship (by status and age).
            models.Index(fields=["saga_step", "saga_lease_until"], name="order_saga_lease"),
            models.Index(fields=["status", "updated_at"], name="order_status_updated"),
        ]

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.status})"

    @property
    def is_draft(self) -> bool:
        return self.status == OrderStatus.PENDING and self.saga_step == SagaStep.NONE

    @property
    def saga_finished(self) -> bool:
        return self.saga_step in (SagaStep.NONE, SagaStep.DONE)


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    quantity = models.PositiveIntegerField()
    unit_price_cents = models.BigIntegerField()

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["order", "sku"], name="order_line_unique_sku")]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"

    @property
    def line_total_cents(self) -> int:
        return self.quantity * self.unit_price_cents


class OrderEvent(models.Model):
    """One entry of an order's tracking timeline: every step and compensation writes one."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    status = models.CharField(max_length=16, choices=OrderStatus.choices)
    # What happened, as a short label: received, reserved, charged, committed,
    # confirmed, compensating, refunded, released, returned, cancelled, paused...
    step = models.CharField(max_length=32)
    note = models.CharField(max_length=255)
    # When it happened: an outcome written with a later step's record keeps its own time (saga.progress.defer).
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.order_id}: {self.note}"
