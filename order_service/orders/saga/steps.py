"""The saga's steps: reserve stock (inventory), charge (payment), commit the reservation (inventory), compensate.

Each step records on the order what it is about to do, calls the peer with a
key derived from the order's id (so a second call does not do the thing
twice), then records the answer together with a timeline event in one
transaction (:func:`progress.advance`). The charge's answer is written before
the commit is sent, never with the commit's outcome: while the commit is in
flight a customer's cancel and the recovery job must find the order at
``committing``, not at ``charging``, where a cancel would compensate a charge
whose commit then lands.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from django.conf import settings

from chassis import deadline
from chassis.client import PeerUnavailable
from chassis.lab import resilience

from ..clients import PeerRefused, inventory, payment
from ..models import Order, OrderStatus, SagaStep
from .progress import advance, finish_cancelled, money, start_compensation

log = logging.getLogger("orders.saga")

CANCELLED_BY_CUSTOMER = "Cancelled by customer"
# How many times the saga sends a charge whose answer was lost when the unsafe switch is on.
UNSAFE_CHARGE_SENDS = 2

SagaPolicy = Literal["compensate", "raise"]


def step_reserve(order: Order, policy: SagaPolicy) -> Order:
    lines = list(order.lines.all())
    try:
        reservation = inventory.inventory_reserve(
            order_id=order.pk,
            lines=[{"sku": line.sku, "quantity": line.quantity} for line in lines],
            idempotency_key=f"order-{order.pk}-reserve",
            ttl_seconds=settings.ORDER_RESERVATION_TTL_SECONDS,
        )
    except inventory.InsufficientStock as exc:
        return finish_cancelled(
            order.pk,
            order=order,
            expect=SagaStep.RESERVING,
            reason=exc.describe(),
            step="out_of_stock",
            code="out_of_stock",
        )
    except inventory.LinesRefused:
        raise  # the runner decides: a 400 for the request placing the order, a cancellation for anyone else
    except PeerRefused as exc:
        return reserve_refused(order.pk, exc, order=order)

    # The reservation's prices are authoritative: the lines show what is charged (written with the order).
    by_sku = {line.sku: line for line in reservation.lines}
    for line in lines:
        if line.sku in by_sku:
            line.unit_price_cents = by_sku[line.sku].unit_price_cents
            line.name = by_sku[line.sku].name or line.name

    # Recording the reservation also records the charge about to be sent (one write, not two), unless
    # the request's deadline has passed meanwhile: then the runner stops at "reserved" and gives up.
    charge_next = not deadline.expired()
    return advance(
        order.pk,
        order=order,
        expect=SagaStep.RESERVING,
        events=[("reserved", "stock reserved")],
        lines=lines,
        saga_step=SagaStep.CHARGING if charge_next else SagaStep.RESERVED,
        charge_outcome_unknown=True if charge_next else None,
        reservation_id=reservation.id,
        reservation_outcome_unknown=False,
        total_cents=reservation.total_cents,
        currency=reservation.currency,
    )


def reserve_refused(order_id: int, exc: PeerRefused, *, order: Order | None = None) -> Order:
    """Inventory refused the reservation: the order ends CANCELLED, nothing reserved or charged."""
    return finish_cancelled(
        order_id,
        order=order,
        expect=SagaStep.RESERVING,
        reason=f"Inventory refused the reservation: {exc.message}",
        step="refused",
        code="reserve_refused",
    )


def step_charge(order: Order, policy: SagaPolicy) -> Order | None:
    if order.saga_step == SagaStep.RESERVED:
        order = advance(
            order.pk, order=order, expect=SagaStep.RESERVED, saga_step=SagaStep.CHARGING, charge_outcome_unknown=True
        )
    try:
        charge = _charge(order)
        note = "payment captured"
    except payment.CardDeclined as exc:
        return start_compensation(
            order.pk,
            order=order,
            expect=SagaStep.CHARGING,
            reason=f"Payment declined: {exc.code}",
            code="declined",
            charge_outcome_unknown=False,
        )
    except PeerRefused as exc:
        return start_compensation(
            order.pk,
            order=order,
            expect=SagaStep.CHARGING,
            reason=f"Payment refused: {exc.message}",
            code="payment_refused",
            charge_outcome_unknown=False,
        )
    except PeerUnavailable as exc:
        # The charge may have been captured and its answer lost: ask payment what it holds.
        log.warning("order %s: charge outcome unknown (%s); looking it up", order.pk, exc)
        charge = captured_charge(order.pk)
        if charge is None:
            if policy == "raise":
                raise  # the worker charges again later with the same key, or gives up at the deadline
            return start_compensation(
                order.pk,
                order=order,
                expect=SagaStep.CHARGING,
                reason="Payment service unavailable; nothing was charged.",
                code="payment_unavailable",
            )
        note = "payment captured (learnt from payment after its answer was lost)"
    # Recording the charge also records the commit about to be sent (one write, not two). It is
    # written before the commit is sent, not with its outcome: while the commit is in flight the
    # order must read "committing" to everyone else (a customer's cancel, the recovery job), or a
    # cancel finds it at "charging" and compensates a charge whose commit then lands.
    return advance(
        order.pk,
        order=order,
        expect=SagaStep.CHARGING,
        events=[("charged", note)],
        saga_step=SagaStep.COMMITTING,
        charge_id=charge.id,
        charge_outcome_unknown=False,
    )


def _charge(order: Order):
    """Charge the order's total under the key ``order-<id>-charge``: captured once, however often it is sent.

    With the lab's **unsafe** switch ``unsafe.charge_retry_new_key`` on (off by default), a charge whose
    answer was lost is sent once more by the saga itself under a new key: payment cannot tell that from
    a new charge and captures again. The consistency lab turns it on to watch the audit name the orders
    charged twice; every reset of the switches turns it off.
    """
    unsafe = resilience.switches().get("unsafe", {}).get("charge_retry_new_key", False)
    sends = UNSAFE_CHARGE_SENDS if unsafe else 1
    for send in range(1, sends + 1):
        key = f"order-{order.pk}-charge" if send == 1 else f"order-{order.pk}-charge-{uuid.uuid4().hex[:12]}"
        try:
            return payment.payment_charge(
                order_id=order.pk,
                customer_id=order.customer_id,
                payment_method=order.payment_method,
                amount_cents=order.total_cents,
                currency=order.currency,
                idempotency_key=key,
            )
        except PeerUnavailable as exc:
            if send == sends:
                raise
            log.warning("order %s: UNSAFE switch on: charging again under a new key after %s", order.pk, exc)
    raise AssertionError("unreachable: the last send returns or raises")


def step_commit(order: Order, policy: SagaPolicy) -> Order:
    if order.saga_step == SagaStep.CHARGED:
        order = advance(order.pk, order=order, expect=SagaStep.CHARGED, saga_step=SagaStep.COMMITTING)
    try:
        inventory.inventory_commit(reservation_id=order.reservation_id)
    except PeerRefused as exc:
        return start_compensation(
            order.pk,
            order=order,
            expect=SagaStep.COMMITTING,
            reason=f"Stock could not be committed: {exc.message}",
            code="commit_refused",
        )
    return advance(
        order.pk,
        order=order,
        expect=SagaStep.COMMITTING,
        events=[("committed", "stock committed"), ("confirmed", "confirmed")],
        status=OrderStatus.CONFIRMED,
        saga_step=SagaStep.DONE,
        status_reason="",
        status_reason_code="",
    )


def step_compensate(order: Order, policy: SagaPolicy) -> None:
    """One compensation per call, in reverse order of the saga: refund, then release, then cancel.

    Before releasing, the answers that were lost are settled: a charge whose
    outcome is unknown is settled at payment by its key (refunded, or the key
    voided so that a charge still on its way is refused), a hold inventory
    made is looked up and released. A peer that cannot answer stops the
    compensation where it is (``PeerUnavailable``): the order is not declared
    CANCELLED while money or stock may still be held for it.
    """
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
            advance(
                order.pk,
                expect=expect,
                events=[("refund_refused", f"payment refused the refund: {exc.message}")],
                refund_id="refused",
            )
            return
        advance(
            order.pk, expect=expect, events=[("refunded", f"payment refunded ({money(order)})")], refund_id=refund.id
        )
        return
    if order.charge_outcome_unknown and not order.charge_id:
        settle_unknown_charge(order)
        return
    if order.reservation_outcome_unknown and not order.reservation_id:
        held = held_reservation(order.pk)
        events = [("reservation_found", "stock held after a lost answer was found; it will be released")]
        events = events if held else []
        advance(
            order.pk,
            expect=expect,
            events=events,
            reservation_id=held.id if held else "",
            reservation_outcome_unknown=False,
        )
        return
    if order.reservation_id and not order.stock_released:
        committed = order.status == OrderStatus.CONFIRMED
        try:
            inventory.inventory_release(reservation_id=order.reservation_id)
            step, note = ("returned", "stock returned") if committed else ("released", "stock released")
        except PeerRefused as exc:
            step, note = "release_refused", f"inventory refused to release the stock: {exc.message}"
        advance(order.pk, expect=expect, events=[(step, note)], stock_released=True)
        return
    advance(
        order.pk,
        expect=expect,
        events=[("cancelled", f"cancelled: {order.status_reason}")],
        status=OrderStatus.CANCELLED,
        saga_step=SagaStep.DONE,
    )


@dataclass(frozen=True)
class SagaStepDef:
    """What the runner does for an order at ``step``: call ``run``, inside a span named ``span_name``.

    ``run`` returns the order as it recorded it, or None when the runner must read it again.
    """

    step: SagaStep
    run: Callable[[Order, SagaPolicy], Order | None]
    span_name: str


STEPS: dict[str, SagaStepDef] = {
    definition.step: definition
    for definition in (
        SagaStepDef(SagaStep.RESERVING, step_reserve, "saga.reserve"),
        SagaStepDef(SagaStep.RESERVED, step_charge, "saga.charge"),
        SagaStepDef(SagaStep.CHARGING, step_charge, "saga.charge"),
        SagaStepDef(SagaStep.CHARGED, step_commit, "saga.commit"),
        SagaStepDef(SagaStep.COMMITTING, step_commit, "saga.commit"),
        SagaStepDef(SagaStep.COMPENSATING, step_compensate, "saga.compensate"),
    )
}


def settle_unknown_charge(order: Order) -> None:
    """Settle at payment whatever the charge key ``order-<id>-charge`` captured, and record what payment did.

    Looking the charge up is not enough: a charge still in flight (payment
    answering after our read timeout) would be captured after the lookup
    found nothing, on an order already CANCELLED. Settling by the key refunds
    what the key captured, or voids the key so that such a late charge is refused.
    """
    key = f"order-{order.pk}-charge"
    try:
        settled = payment.payment_settle(
            order_id=order.pk,
            charge_key=key,
            reason=order.status_reason or CANCELLED_BY_CUSTOMER,
            idempotency_key=f"order-{order.pk}-settle",
        )
    except PeerRefused as exc:
        # Retrying cannot change a refusal; the timeline (and the audit) show it.
        advance(
            order.pk,
            expect=SagaStep.COMPENSATING,
            events=[("settle_refused", f"payment refused to settle {key}: {exc.message}")],
            charge_outcome_unknown=False,
        )
        return
    if settled.refunded:
        refunded = f"{settled.refunded_cents / 100:.2f} {order.currency}"
        step, note = "refunded", f"a capture made after its answer was lost was refunded ({refunded})"
    elif settled.outcome == "VOIDED":
        step, note = "charge_voided", f"nothing was charged under {key}; payment will refuse a charge arriving late"
    else:
        step, note = "charge_settled", f"payment holds no money under {key} ({settled.outcome.lower()})"
    advance(
        order.pk,
        expect=SagaStep.COMPENSATING,
        events=[(step, note)],
        charge_id=settled.charge_id if settled.refunded else None,
        refund_id=settled.refund_id if settled.refunded else None,
        charge_outcome_unknown=False,
    )


def captured_charge(order_id: int):
    """The captured charge payment holds for this order, or None; PeerUnavailable when it cannot tell."""
    try:
        charges = payment.payment_charges_for_order(order_id=order_id)
    except PeerRefused as exc:
        raise PeerUnavailable(payment.PEER, f"charges lookup refused: {exc.message}", status=exc.status) from exc
    return next((charge for charge in charges if charge.captured), None)


def held_reservation(order_id: int):
    """The reservation inventory holds (or sold) for this order, or None; PeerUnavailable when it cannot tell."""
    try:
        reservations = inventory.inventory_reservations_for_order(order_id=order_id)
    except PeerRefused as exc:
        raise PeerUnavailable(inventory.PEER, f"reservations lookup refused: {exc.message}", status=exc.status) from exc
    return next((r for r in reservations if r.status in ("HELD", "COMMITTED")), None)
