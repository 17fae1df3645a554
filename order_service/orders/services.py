"""Writes of the orders app: create, modify, check out, cancel, and the saga behind them.

The checkout saga is orchestrated here: reserve stock (inventory), charge
(payment), commit the reservation (inventory). Each step is a function that
records on the order what it is about to do, calls the peer with a key derived
from the order's id (so a second call does not do the thing twice), then
records the answer together with a timeline event in one transaction. Because
the progress is on the order, :func:`order_saga_run` can resume any saga from
its ``saga_step``: a replay of the same request, a retried cancel or (later) a
background worker finishes what an interrupted run left.

Only one runner works on an order at a time: it holds a lease
(``saga_lease_until``) taken under a row lock; another runner that finds a live
lease leaves the order alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError

from chassis.auth import LabUser
from chassis.client import PeerUnavailable
from chassis.errors import ServiceError
from chassis.idempotency import fingerprint

from .clients import PeerRefused, inventory, payment
from .models import Order, OrderEvent, OrderLine, OrderStatus, SagaStep

log = logging.getLogger("orders.saga")

CANCELLED_BY_CUSTOMER = "Cancelled by customer"
_UNSET = object()


@dataclass(frozen=True)
class OrderOutcome:
    """What a write did: the order, and whether it was a replay of an earlier request."""

    order: Order
    replayed: bool = False

    @property
    def finished(self) -> bool:
        """The saga (if any) has ended: the order is a draft or in its final state for now."""
        return self.order.saga_finished


class SagaMoved(Exception):
    """The order is no longer at the step this runner expected: another runner took over."""


# --------------------------------------------------------------------------- create, modify


def order_create(
    *,
    customer_id: int,
    idempotency_key: str,
    lines: list[dict],
    payment_method: str,
    shipping_address: dict | None = None,
    checkout: bool = True,
) -> OrderOutcome:
    """Create an order from a validated body and, unless it is a draft, run its checkout saga.

    The same ``(customer_id, idempotency_key)`` with the same body returns the
    existing order (resuming its saga if an earlier run was interrupted); with
    another body it is a 409 ``idempotency_conflict``. Unknown or inactive skus
    are a 400 and an unreachable inventory a 503, both before anything is written.
    """
    request_fingerprint = fingerprint(
        {"lines": lines, "payment_method": payment_method, "shipping_address": shipping_address, "checkout": checkout}
    )
    existing = Order.objects.filter(customer_id=customer_id, idempotency_key=idempotency_key).first()
    if existing is not None:
        return _replay(existing, request_fingerprint)

    priced_lines, currency = _priced_lines(lines)
    try:
        with transaction.atomic():
            order = Order.objects.create(
                customer_id=customer_id,
                idempotency_key=idempotency_key,
                request_fingerprint=request_fingerprint,
                payment_method=payment_method,
                shipping_address=shipping_address,
                currency=currency,
                total_cents=sum(line.line_total_cents for line in priced_lines),
                saga_step=SagaStep.RESERVING if checkout else SagaStep.NONE,
                saga_lease_until=_lease_end() if checkout else None,
            )
            for line in priced_lines:
                line.order = order
            OrderLine.objects.bulk_create(priced_lines)
            _event(order, "received", "order received" if checkout else "order received as a draft")
    except IntegrityError:
        # A concurrent request with the same key won the unique constraint: answer with its order.
        existing = Order.objects.filter(customer_id=customer_id, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _replay(existing, request_fingerprint)

    if checkout:
        order = order_saga_run(order_id=order.pk)
    return OrderOutcome(order=order)


def order_update(
    *, order_id: int, user: LabUser, lines: list[dict] | None = None, shipping_address=_UNSET
) -> OrderOutcome:
    """Replace the lines and/or the shipping address of a draft (PENDING, never checked out)."""
    order = _order_for_owner(order_id=order_id, user=user)
    _ensure_modifiable(order)
    priced_lines = None
    if lines is not None:
        priced_lines, currency = _priced_lines(lines)

    with transaction.atomic():
        order = _order_for_owner(order_id=order_id, user=user, lock=True)
        _ensure_modifiable(order)
        changed = []
        if priced_lines is not None:
            order.lines.all().delete()
            for line in priced_lines:
                line.order = order
            OrderLine.objects.bulk_create(priced_lines)
            order.total_cents = sum(line.line_total_cents for line in priced_lines)
            order.currency = currency
            changed.append("lines")
        if shipping_address is not _UNSET:
            order.shipping_address = shipping_address
            changed.append("shipping address")
        order.save()
        _event(order, "modified", f"order modified: {', '.join(changed)}")
    return OrderOutcome(order=order)


def _ensure_modifiable(order: Order) -> None:
    if not order.is_draft:
        raise ServiceError(
            status_code=409,
            code="order_not_modifiable",
            message=f"Only a draft can be modified; this order is {order.status} (saga step {order.saga_step}).",
        )


def _priced_lines(lines: list[dict]) -> tuple[list[OrderLine], str]:
    """Unsaved lines priced from the catalog (a 400 for unknown skus, a 503 when inventory is down)."""
    skus = [line["sku"] for line in lines]
    try:
        products = inventory.inventory_products_lookup(skus=skus)
    except (PeerUnavailable, PeerRefused) as exc:
        log.warning("product lookup failed: %s", exc)
        raise ServiceError(
            status_code=503,
            code="dependency_unavailable",
            message="The inventory service is unavailable, so the products cannot be checked; "
            "nothing was saved. Try again shortly.",
        ) from exc
    unknown = [sku for sku in skus if sku not in products or not products[sku].active]
    if unknown:
        raise ValidationError({"lines": [f"Unknown or inactive sku: {sku}." for sku in unknown]})
    currencies = {products[sku].currency for sku in skus}
    if len(currencies) > 1:
        raise ValidationError({"lines": ["These products are priced in different currencies; order them separately."]})
    priced = [
        OrderLine(
            sku=line["sku"],
            name=products[line["sku"]].name,
            quantity=line["quantity"],
            unit_price_cents=products[line["sku"]].price_cents,
        )
        for line in lines
    ]
    return priced, currencies.pop()


def _replay(order: Order, request_fingerprint: str) -> OrderOutcome:
    if order.request_fingerprint != request_fingerprint:
        raise ServiceError(
            status_code=409,
            code="idempotency_conflict",
            message="This Idempotency-Key was already used with a different body; use a new key for a new order.",
            extra={"order_id": order.pk},
        )
    return OrderOutcome(order=order_saga_resume(order_id=order.pk), replayed=True)


# --------------------------------------------------------------------------- checkout, cancel


def order_checkout(*, order_id: int, user: LabUser) -> OrderOutcome:
    """Run the checkout saga of a draft; anything but a draft is a 409 ``order_not_draft``."""
    with transaction.atomic():
        order = _order_for_owner(order_id=order_id, user=user, lock=True)
        if not order.is_draft:
            raise ServiceError(
                status_code=409,
                code="order_not_draft",
                message=f"Only a draft can be checked out; this order is {order.status} (saga step {order.saga_step}).",
            )
        order.saga_step = SagaStep.RESERVING
        order.saga_lease_until = _lease_end()
        order.save(update_fields=["saga_step", "saga_lease_until", "updated_at"])
        _event(order, "checkout", "checkout started")
    return OrderOutcome(order=order_saga_run(order_id=order.pk))


def order_cancel(*, order_id: int, user: LabUser) -> OrderOutcome:
    """Cancel an order for its owner: a draft at once; a confirmed order with a refund and restock.

    A cancellation whose peers are down stops where it is (its progress is
    recorded) and answers 503; sending the cancel again finishes it.
    """
    with transaction.atomic():
        order = _order_for_owner(order_id=order_id, user=user, lock=True)
        if order.status not in (OrderStatus.PENDING, OrderStatus.CONFIRMED):
            raise ServiceError(
                status_code=409, code="order_not_cancellable", message=f"An order that is {order.status} cannot be cancelled."
            )
        if order.is_draft:
            order.status = OrderStatus.CANCELLED
            order.saga_step = SagaStep.DONE
            order.status_reason = CANCELLED_BY_CUSTOMER
            order.save(update_fields=["status", "saga_step", "status_reason", "updated_at"])
            _event(order, "cancelled", "cancelled by customer (draft)")
            return OrderOutcome(order=order)
        if _lease_alive(order):
            raise ServiceError(
                status_code=409,
                code="order_not_cancellable",
                message="This order's checkout or cancellation is running right now; try again in a moment.",
            )
        if order.saga_step == SagaStep.COMPENSATING:
            _event(order, "compensating", "cancellation resumed")
        else:
            # A confirmed order, or a checkout that an outage interrupted: undo what was done.
            order.saga_step = SagaStep.COMPENSATING
            order.status_reason = CANCELLED_BY_CUSTOMER
            _event(order, "cancel_requested", "cancellation requested by customer")
        order.saga_lease_until = _lease_end()
        order.save(update_fields=["saga_step", "status_reason", "saga_lease_until", "updated_at"])

    order = order_saga_run(order_id=order_id)
    if not order.saga_finished:
        raise ServiceError(
            status_code=503,
            code="dependency_unavailable",
            message="A service needed to cancel this order is unavailable; what was done is recorded. "
            "Send the cancel again to finish it.",
            extra={"order_id": order.pk},
        )
    return OrderOutcome(order=order)


def _order_for_owner(*, order_id: int, user: LabUser, lock: bool = False) -> Order:
    queryset = Order.objects.select_for_update() if lock else Order.objects
    order = queryset.filter(pk=order_id).first()
    if order is None or (order.customer_id != user.id and not user.is_staff):
        raise NotFound("No such order.")
    if order.customer_id != user.id:
        raise PermissionDenied("Only the customer who placed this order can change it.")
    return order


# --------------------------------------------------------------------------- the saga

SagaPolicy = Literal["compensate", "raise"]


def order_saga_resume(*, order_id: int, on_unavailable: SagaPolicy = "compensate") -> Order:
    """Take over an interrupted saga if nobody runs it now, and run it; return the order as it stands."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_finished or _lease_alive(order):
            return order
        order.saga_lease_until = _lease_end()
        order.save(update_fields=["saga_lease_until", "updated_at"])
        _event(order, "resumed", f"saga resumed at step {order.saga_step}")
    return order_saga_run(order_id=order_id, on_unavailable=on_unavailable)


def order_saga_run(*, order_id: int, on_unavailable: SagaPolicy = "compensate") -> Order:
    """Run the saga of an order whose lease the caller holds, from its ``saga_step`` to the end.

    ``on_unavailable`` says what a peer that does not answer means: in the
    synchronous request (``"compensate"``) the saga decides at once (cancel,
    compensate, or stop where it is when nothing safe can be decided); a
    background worker (``"raise"``) gets the :class:`PeerUnavailable` to retry later.
    """
    try:
        while True:
            order = Order.objects.get(pk=order_id)
            if order.saga_finished:
                return order
            try:
                _STEPS[order.saga_step](order)
            except PeerUnavailable as exc:
                if on_unavailable == "raise":
                    raise
                if not _after_unavailable(order_id, exc):
                    return Order.objects.get(pk=order_id)
    except SagaMoved:
        return Order.objects.get(pk=order_id)
    finally:
        Order.objects.filter(pk=order_id).update(saga_lease_until=None)


def _step_reserve(order: Order) -> None:
    lines = list(order.lines.all())
    try:
        reservation = inventory.inventory_reserve(
            order_id=order.pk,
            lines=[{"sku": line.sku, "quantity": line.quantity} for line in lines],
            idempotency_key=f"order-{order.pk}-reserve",
            ttl_seconds=settings.ORDER_RESERVATION_TTL_SECONDS,
        )
    except inventory.InsufficientStock as exc:
        _finish_cancelled(order.pk, expect=SagaStep.RESERVING, reason=exc.describe(), step="out_of_stock")
        return
    except PeerRefused as exc:
        _finish_cancelled(
            order.pk, expect=SagaStep.RESERVING, reason=f"Inventory refused the reservation: {exc.message}", step="refused"
        )
        return

    def reprice(locked: Order) -> None:
        # The reservation's prices are authoritative: the lines show what is charged.
        by_sku = {line.sku: line for line in reservation.lines}
        for line in lines:
            if line.sku in by_sku:
                line.unit_price_cents = by_sku[line.sku].unit_price_cents
                line.name = by_sku[line.sku].name or line.name
        OrderLine.objects.bulk_update(lines, ["unit_price_cents", "name"])

    _advance(
        order.pk,
        expect=SagaStep.RESERVING,
        events=[("reserved", "stock reserved")],
        then=reprice,
        saga_step=SagaStep.RESERVED,
        reservation_id=reservation.id,
        total_cents=reservation.total_cents,
        currency=reservation.currency,
    )


def _step_charge(order: Order) -> None:
    if order.saga_step == SagaStep.RESERVED:
        order = _advance(order.pk, expect=SagaStep.RESERVED, saga_step=SagaStep.CHARGING, charge_outcome_unknown=True)
    try:
        charge = payment.payment_charge(
            order_id=order.pk,
            customer_id=order.customer_id,
            payment_method=order.payment_method,
            amount_cents=order.total_cents,
            currency=order.currency,
            idempotency_key=f"order-{order.pk}-charge",
        )
        note = "payment captured"
    except payment.CardDeclined as exc:
        _start_compensation(order.pk, expect=SagaStep.CHARGING, reason=f"Payment declined: {exc.code}",
                            charge_outcome_unknown=False)
        return
    except PeerRefused as exc:
        _start_compensation(order.pk, expect=SagaStep.CHARGING, reason=f"Payment refused: {exc.message}",
                            charge_outcome_unknown=False)
        return
    except PeerUnavailable as exc:
        # The charge may have been captured and its answer lost: ask payment what it holds.
        log.warning("order %s: charge outcome unknown (%s); looking it up", order.pk, exc)
        charge = _captured_charge(order.pk)
        if charge is None:
            _start_compensation(order.pk, expect=SagaStep.CHARGING,
                                reason="Payment service unavailable; nothing was charged.")
            return
        note = "payment captured (learnt from payment after its answer was lost)"
    _advance(
        order.pk,
        expect=SagaStep.CHARGING,
        events=[("charged", note)],
        saga_step=SagaStep.CHARGED,
        charge_id=charge.id,
        charge_outcome_unknown=False,
    )


def _step_commit(order: Order) -> None:
    if order.saga_step == SagaStep.CHARGED:
        order = _advance(order.pk, expect=SagaStep.CHARGED, saga_step=SagaStep.COMMITTING)
    try:
        inventory.inventory_commit(reservation_id=order.reservation_id)
    except PeerRefused as exc:
        _start_compensation(order.pk, expect=SagaStep.COMMITTING, reason=f"Stock could not be committed: {exc.message}")
        return
    _advance(
        order.pk,
        expect=SagaStep.COMMITTING,
        events=[("committed", "stock committed"), ("confirmed", "confirmed")],
        status=OrderStatus.CONFIRMED,
        saga_step=SagaStep.DONE,
        status_reason="",
    )


def _step_compensate(order: Order) -> None:
    """One compensation per call, in reverse order of the saga: refund, then release, then cancel."""
    expect = SagaStep.COMPENSATING
    if order.charge_id and not order.refund_id:
        try:
            refund = payment.payment_refund(
                charge_id=order.charge_id,
                amount_cents=order.total_cents,
                reason=order.status_reason or CANCELLED_BY_CUSTOMER,
                idempotency_key=f"order-{order.pk}-refund",
            )
        except PeerRefused as exc:
            # Retrying cannot change a refusal; the timeline (and the audit) show it.
            _advance(order.pk, expect=expect, events=[("refund_refused", f"payment refused the refund: {exc.message}")],
                     refund_id="refused")
            return
        _advance(order.pk, expect=expect, events=[("refunded", f"payment refunded ({_money(order)})")],
                 refund_id=refund.id)
        return
    if order.charge_outcome_unknown and not order.charge_id:
        charge = _captured_charge(order.pk)
        events = [("charge_found", "a capture was found after a lost answer; it will be refunded")] if charge else []
        _advance(order.pk, expect=expect, events=events, charge_id=charge.id if charge else "",
                 charge_outcome_unknown=False)
        return
    if order.reservation_id and not order.stock_released:
        committed = order.status == OrderStatus.CONFIRMED
        try:
            inventory.inventory_release(reservation_id=order.reservation_id)
            step, note = ("returned", "stock returned") if committed else ("released", "stock released")
        except PeerRefused as exc:
            step, note = "release_refused", f"inventory refused to release the stock: {exc.message}"
        _advance(order.pk, expect=expect, events=[(step, note)], stock_released=True)
        return
    _advance(
        order.pk,
        expect=expect,
        events=[("cancelled", f"cancelled: {order.status_reason}")],
        status=OrderStatus.CANCELLED,
        saga_step=SagaStep.DONE,
    )


_STEPS = {
    SagaStep.RESERVING: _step_reserve,
    SagaStep.RESERVED: _step_charge,
    SagaStep.CHARGING: _step_charge,
    SagaStep.CHARGED: _step_commit,
    SagaStep.COMMITTING: _step_commit,
    SagaStep.COMPENSATING: _step_compensate,
}


def _after_unavailable(order_id: int, exc: PeerUnavailable) -> bool:
    """Decide, in a synchronous run, what a peer without an answer means; True to go on running."""
    order = Order.objects.get(pk=order_id)
    step = order.saga_step
    if step == SagaStep.RESERVING:
        # Nothing was charged. A hold inventory may have made expires by itself (ttl_seconds).
        _finish_cancelled(
            order_id,
            expect=step,
            reason="Inventory unavailable while reserving stock; nothing was charged.",
            step="inventory_unavailable",
        )
        return True
    if step == SagaStep.COMMITTING:
        _start_compensation(order_id, expect=step, reason="Inventory unavailable while committing stock; payment refunded.")
        return True
    # Charging with no way to learn the outcome, or a compensation that cannot go on:
    # deciding now could lose money or stock, so the order stays here until a later run.
    _advance(order_id, expect=step, events=[("paused", f"paused: {exc.peer} unavailable ({exc.reason})")])
    return False


def _captured_charge(order_id: int):
    """The captured charge payment holds for this order, or None; PeerUnavailable when it cannot tell."""
    try:
        charges = payment.payment_charges_for_order(order_id=order_id)
    except PeerRefused as exc:
        raise PeerUnavailable(payment.PEER, f"charges lookup refused: {exc.message}", status=exc.status) from exc
    return next((charge for charge in charges if charge.captured), None)


def _start_compensation(order_id: int, *, expect: str, reason: str, **changes) -> None:
    _advance(
        order_id,
        expect=expect,
        events=[("compensating", f"compensating: {reason}")],
        saga_step=SagaStep.COMPENSATING,
        status_reason=reason[:255],
        **changes,
    )


def _finish_cancelled(order_id: int, *, expect: str, reason: str, step: str) -> None:
    _advance(
        order_id,
        expect=expect,
        events=[(step, reason), ("cancelled", f"cancelled: {reason}")],
        status=OrderStatus.CANCELLED,
        saga_step=SagaStep.DONE,
        status_reason=reason[:255],
    )


def _advance(order_id: int, *, expect: str, events=(), then=None, **changes) -> Order:
    """Record a step's outcome: lock the order, check it is still at ``expect``, apply, log events."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_step != expect:
            raise SagaMoved(f"order {order_id} is at {order.saga_step}, not {expect}")
        for name, value in changes.items():
            setattr(order, name, value)
        order.saga_lease_until = _lease_end()
        order.save()
        if then is not None:
            then(order)
        OrderEvent.objects.bulk_create(
            [OrderEvent(order=order, status=order.status, step=step, note=note[:255]) for step, note in events]
        )
    return order


def _event(order: Order, step: str, note: str) -> None:
    OrderEvent.objects.create(order=order, status=order.status, step=step, note=note[:255])


def _lease_end():
    return timezone.now() + timedelta(seconds=settings.ORDER_SAGA_LEASE_SECONDS)


def _lease_alive(order: Order) -> bool:
    return order.saga_lease_until is not None and order.saga_lease_until > timezone.now()


def _money(order: Order) -> str:
    return f"{order.total_cents / 100:.2f} {order.currency}"
