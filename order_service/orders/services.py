"""Writes of the orders app: create, modify, check out, cancel, and the saga behind them.

The checkout saga is orchestrated here: reserve stock (inventory), charge
(payment), commit the reservation (inventory). Each step is a function that
records on the order what it is about to do, calls the peer with a key derived
from the order's id (so a second call does not do the thing twice), then
records the answer together with a timeline event in one transaction. Because
the progress is on the order, :func:`order_saga_run` can resume any saga from
its ``saga_step``: a replay of the same request, a retried cancel or the
background worker (``orders.background``) finishes what an interrupted run left.

Where a checkout runs depends on the lab's saga mode (``orders.lab``): in the
request (``sync``), or queued for the Celery worker (``async``), which retries
a peer that is down until the order's ``saga_deadline`` and then compensates.

Only one runner works on an order at a time: it holds a lease
(``saga_lease_until``, with its name in ``saga_runner``) taken under a row
lock; another runner that finds a live lease leaves the order alone. A queued
task holds the lease of the order it will run, so nobody else starts it meanwhile.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError

from chassis import metrics, telemetry
from chassis.auth import LabUser
from chassis.client import PeerUnavailable
from chassis.errors import ServiceError
from chassis.idempotency import fingerprint

from . import lab
from .clients import PeerRefused, inventory, payment
from .models import Order, OrderEvent, OrderLine, OrderStatus, SagaStep

log = logging.getLogger("orders.saga")

clock = timezone.now  # injectable in tests: every lease and deadline reads the time here

CANCELLED_BY_CUSTOMER = "Cancelled by customer"
IN_PROGRESS = tuple(step for step in SagaStep.values if step not in (SagaStep.NONE, SagaStep.DONE))
# A saga takes at most a dozen steps (three forward, four back, lookups): more means a bug, not progress.
MAX_STEPS_PER_RUN = 50
_UNSET = object()


@dataclass(frozen=True)
class OrderOutcome:
    """What a write did: the order, whether it replayed an earlier request, whether its saga was queued."""

    order: Order
    replayed: bool = False
    queued: bool = False

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
    saga = lab.saga_settings()
    in_background = checkout and saga["mode"] == "async"
    runner = (_task_runner() if in_background else _request_runner()) if checkout else ""
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
                saga_runner=runner,
            )
            for line in priced_lines:
                line.order = order
            OrderLine.objects.bulk_create(priced_lines)
            _event(order, "received", "order received" if checkout else "order received as a draft")
            if in_background:
                order.saga_deadline = order.created_at + timedelta(seconds=saga["deadline_seconds"])
                order.save(update_fields=["saga_deadline"])
                _event(order, "queued", f"checkout queued for the worker (gives up after {saga['deadline_seconds']} s)")
    except IntegrityError:
        # A concurrent request with the same key won the unique constraint: answer with its order.
        existing = Order.objects.filter(customer_id=customer_id, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _replay(existing, request_fingerprint)

    if in_background:
        _send_saga_task(order_id=order.pk, runner=runner)
        return OrderOutcome(order=order, queued=True)
    if checkout:
        order = order_saga_run(order_id=order.pk, runner=runner)
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
    if lab.saga_is_async():
        # The worker finishes it; a replay only re-queues a saga nobody runs any more.
        order_saga_enqueue(order_id=order.pk, note="queued again after a replay of the request")
        return OrderOutcome(order=Order.objects.get(pk=order.pk), replayed=True)
    return OrderOutcome(order=order_saga_resume(order_id=order.pk), replayed=True)


# --------------------------------------------------------------------------- checkout, cancel


def order_checkout(*, order_id: int, user: LabUser) -> OrderOutcome:
    """Run (or, in async mode, queue) the checkout saga of a draft; anything else is a 409 ``order_not_draft``.

    A draft's deadline counts from its checkout, not from when it was saved.
    """
    saga = lab.saga_settings()
    in_background = saga["mode"] == "async"
    runner = _task_runner() if in_background else _request_runner()
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
        order.saga_runner = runner
        if in_background:
            order.saga_deadline = clock() + timedelta(seconds=saga["deadline_seconds"])
        order.save(update_fields=["saga_step", "saga_lease_until", "saga_runner", "saga_deadline", "updated_at"])
        _event(order, "checkout", "checkout started")
        if in_background:
            _event(order, "queued", f"checkout queued for the worker (gives up after {saga['deadline_seconds']} s)")
    if in_background:
        _send_saga_task(order_id=order.pk, runner=runner)
        return OrderOutcome(order=order, queued=True)
    return OrderOutcome(order=order_saga_run(order_id=order.pk, runner=runner))


def order_cancel(*, order_id: int, user: LabUser) -> OrderOutcome:
    """Cancel an order for its owner: a draft at once; a confirmed order with a refund and restock.

    A cancellation whose peers are down stops where it is (its progress is
    recorded) and answers 503; sending the cancel again finishes it.
    """
    runner = _request_runner()
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
            order.status_reason_code = "customer"
            order.save(update_fields=["status", "saga_step", "status_reason", "status_reason_code", "updated_at"])
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
            order.status_reason_code = "customer"
            _event(order, "cancel_requested", "cancellation requested by customer")
        order.saga_lease_until = _lease_end()
        order.saga_runner = runner
        order.save(update_fields=["saga_step", "status_reason", "status_reason_code", "saga_lease_until",
                                  "saga_runner", "updated_at"])

    order = order_saga_run(order_id=order_id, runner=runner)
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

_SPANS = {
    SagaStep.RESERVING: "saga.reserve",
    SagaStep.RESERVED: "saga.charge",
    SagaStep.CHARGING: "saga.charge",
    SagaStep.CHARGED: "saga.commit",
    SagaStep.COMMITTING: "saga.commit",
    SagaStep.COMPENSATING: "saga.compensate",
}


def order_saga_resume(*, order_id: int, on_unavailable: SagaPolicy = "compensate") -> Order:
    """Take over an interrupted saga if nobody runs it now, and run it here; return the order as it stands."""
    runner = _request_runner()
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_finished or _lease_alive(order):
            return order
        order.saga_lease_until = _lease_end()
        order.saga_runner = runner
        order.save(update_fields=["saga_lease_until", "saga_runner", "updated_at"])
        _event(order, "resumed", f"saga resumed at step {order.saga_step}")
    return order_saga_run(order_id=order_id, on_unavailable=on_unavailable, runner=runner)


def order_saga_enqueue(*, order_id: int, note: str) -> bool:
    """Hand a saga nobody runs to the worker: take its lease for a new task, record ``note``, queue the task.

    Returns False (and does nothing) when the saga has ended or someone holds
    its lease. An order that never had a deadline (its checkout ran in a
    request) gets one counted from its creation.
    """
    runner = _task_runner()
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_finished or _lease_alive(order):
            return False
        order.saga_lease_until = _lease_end()
        order.saga_runner = runner
        if order.saga_deadline is None:
            order.saga_deadline = order.created_at + timedelta(seconds=lab.saga_settings()["deadline_seconds"])
        order.save(update_fields=["saga_lease_until", "saga_runner", "saga_deadline", "updated_at"])
        _event(order, "queued", f"{note} (at step {order.saga_step})")
    _send_saga_task(order_id=order_id, runner=runner)
    return True


def order_saga_claim(*, order_id: int, runner: str) -> bool:
    """Take the lease of an unfinished saga for ``runner``: free, expired, or already its own (a redelivered task)."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_finished or (_lease_alive(order) and order.saga_runner != runner):
            return False
        order.saga_lease_until = _lease_end(held_by_worker=True)
        order.saga_runner = runner
        order.save(update_fields=["saga_lease_until", "saga_runner"])
    return True


def order_saga_received(*, order_id: int, runner: str, eta: datetime | None = None) -> None:
    """A worker has taken the task ``runner`` from the broker: its lease now lasts until ``eta`` plus the task lease.

    From here on, if that worker dies, the saga comes back within seconds
    (recovery) instead of after the long lease of a task waiting in the broker.
    """
    start = max(clock(), eta) if eta is not None else clock()
    Order.objects.filter(pk=order_id, saga_runner=runner, saga_step__in=IN_PROGRESS).update(
        saga_lease_until=start + timedelta(seconds=settings.ORDER_SAGA_TASK_LEASE_SECONDS)
    )


def order_saga_release(*, order_id: int, runner: str) -> None:
    """Give the lease back, if ``runner`` still holds it (another runner may have taken over since)."""
    Order.objects.filter(pk=order_id, saga_runner=runner).update(saga_lease_until=None)


def order_saga_wait(*, order_id: int, runner: str, seconds: float, exc: PeerUnavailable) -> bool:
    """Keep the lease while ``runner`` waits ``seconds`` for a peer to come back; record the wait once per streak.

    Returns False when another runner took the order over meanwhile.
    """
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_runner != runner or order.saga_finished:
            return False
        order.saga_lease_until = clock() + timedelta(seconds=seconds + settings.ORDER_SAGA_TASK_LEASE_SECONDS)
        order.save(update_fields=["saga_lease_until", "updated_at"])
        last = order.events.order_by("-id").first()
        if last is None or last.step != "waiting":
            _event(order, "waiting", f"waiting: {exc.peer} unavailable ({exc.reason}); the worker retries with backoff")
    return True


def order_saga_give_up(*, order_id: int, expect: str, peer: str) -> None:
    """The deadline has passed with ``peer`` still down: undo what was done (the compensation may wait for peers)."""
    order = Order.objects.get(pk=order_id)
    started = order.events.filter(step="checkout").values_list("created_at", flat=True).last() or order.created_at
    budget = round((order.saga_deadline - started).total_seconds()) if order.saga_deadline else 0
    changes = {}
    if expect == SagaStep.RESERVING:
        # One of the attempts may have reserved before its answer was lost.
        changes["reservation_outcome_unknown"] = True
    _start_compensation(order_id, expect=expect, reason=f"Gave up after {budget} s: {peer} unavailable",
                        code="gave_up", **changes)


def order_saga_run(
    *, order_id: int, on_unavailable: SagaPolicy = "compensate", runner: str = "", keep_lease: bool = False
) -> Order:
    """Run the saga of an order whose lease ``runner`` holds, from its ``saga_step`` to the end.

    ``on_unavailable`` says what a peer that does not answer means: in the
    synchronous request (``"compensate"``) the saga decides at once (cancel,
    compensate, or stop where it is when nothing safe can be decided); a
    background worker (``"raise"``) gets the :class:`PeerUnavailable` to retry later.
    The lease is given back at the end unless ``keep_lease`` (the worker does it).
    """
    try:
        for _ in range(MAX_STEPS_PER_RUN):
            order = Order.objects.get(pk=order_id)
            if order.saga_finished:
                return order
            try:
                with telemetry.span(_SPANS[order.saga_step], **{"order.id": order_id, "saga.step": order.saga_step}):
                    _STEPS[order.saga_step](order, on_unavailable)
            except PeerUnavailable as exc:
                _note_unknown_reservation(order_id, exc)
                if on_unavailable == "raise":
                    raise
                if not _after_unavailable(order_id, exc):
                    return Order.objects.get(pk=order_id)
        log.error("order %s: saga still running after %d steps; leaving it where it is", order_id, MAX_STEPS_PER_RUN)
        return Order.objects.get(pk=order_id)
    except SagaMoved:
        return Order.objects.get(pk=order_id)
    finally:
        if not keep_lease:
            order_saga_release(order_id=order_id, runner=runner)


def _step_reserve(order: Order, policy: SagaPolicy) -> None:
    lines = list(order.lines.all())
    try:
        reservation = inventory.inventory_reserve(
            order_id=order.pk,
            lines=[{"sku": line.sku, "quantity": line.quantity} for line in lines],
            idempotency_key=f"order-{order.pk}-reserve",
            ttl_seconds=settings.ORDER_RESERVATION_TTL_SECONDS,
        )
    except inventory.InsufficientStock as exc:
        _finish_cancelled(order.pk, expect=SagaStep.RESERVING, reason=exc.describe(), step="out_of_stock",
                          code="out_of_stock")
        return
    except PeerRefused as exc:
        _finish_cancelled(
            order.pk, expect=SagaStep.RESERVING, reason=f"Inventory refused the reservation: {exc.message}",
            step="refused", code="reserve_refused",
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
        reservation_outcome_unknown=False,
        total_cents=reservation.total_cents,
        currency=reservation.currency,
    )


def _step_charge(order: Order, policy: SagaPolicy) -> None:
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
                            code="declined", charge_outcome_unknown=False)
        return
    except PeerRefused as exc:
        _start_compensation(order.pk, expect=SagaStep.CHARGING, reason=f"Payment refused: {exc.message}",
                            code="payment_refused", charge_outcome_unknown=False)
        return
    except PeerUnavailable as exc:
        # The charge may have been captured and its answer lost: ask payment what it holds.
        log.warning("order %s: charge outcome unknown (%s); looking it up", order.pk, exc)
        charge = _captured_charge(order.pk)
        if charge is None:
            if policy == "raise":
                raise  # the worker charges again later with the same key, or gives up at the deadline
            _start_compensation(order.pk, expect=SagaStep.CHARGING,
                                reason="Payment service unavailable; nothing was charged.", code="payment_unavailable")
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


def _step_commit(order: Order, policy: SagaPolicy) -> None:
    if order.saga_step == SagaStep.CHARGED:
        order = _advance(order.pk, expect=SagaStep.CHARGED, saga_step=SagaStep.COMMITTING)
    try:
        inventory.inventory_commit(reservation_id=order.reservation_id)
    except PeerRefused as exc:
        _start_compensation(order.pk, expect=SagaStep.COMMITTING, reason=f"Stock could not be committed: {exc.message}",
                            code="commit_refused")
        return
    _advance(
        order.pk,
        expect=SagaStep.COMMITTING,
        events=[("committed", "stock committed"), ("confirmed", "confirmed")],
        status=OrderStatus.CONFIRMED,
        saga_step=SagaStep.DONE,
        status_reason="",
        status_reason_code="",
    )


def _step_compensate(order: Order, policy: SagaPolicy) -> None:
    """One compensation per call, in reverse order of the saga: refund, then release, then cancel.

    Before releasing, the answers that were lost are looked up: a capture payment
    made (refunded), a hold inventory made (released). A peer that cannot answer
    stops the compensation where it is (``PeerUnavailable``): the order is not
    declared CANCELLED while money or stock may still be held for it.
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
    if order.reservation_outcome_unknown and not order.reservation_id:
        held = _held_reservation(order.pk)
        events = [("reservation_found", "stock held after a lost answer was found; it will be released")]
        events = events if held else []
        _advance(order.pk, expect=expect, events=events, reservation_id=held.id if held else "",
                 reservation_outcome_unknown=False)
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


def _note_unknown_reservation(order_id: int, exc: PeerUnavailable) -> None:
    """A reserve that may have reached inventory (not refused by our own breaker or bulkhead) may have held stock."""
    if not exc.rejected:
        Order.objects.filter(pk=order_id, saga_step=SagaStep.RESERVING).update(reservation_outcome_unknown=True)


def _after_unavailable(order_id: int, exc: PeerUnavailable) -> bool:
    """Decide, in a synchronous run, what a peer without an answer means; True to go on running."""
    order = Order.objects.get(pk=order_id)
    step = order.saga_step
    if step == SagaStep.RESERVING:
        reason = "Inventory unavailable while reserving stock; nothing was charged."
        if order.reservation_outcome_unknown:
            # The reservation may have been made with its answer lost: find and release it first.
            _start_compensation(order_id, expect=step, reason=reason, code="inventory_unavailable")
        else:
            # Our breaker or bulkhead refused before anything was sent: nothing to undo.
            _finish_cancelled(order_id, expect=step, reason=reason, step="inventory_unavailable",
                              code="inventory_unavailable")
        return True
    if step == SagaStep.COMMITTING:
        _start_compensation(order_id, expect=step, code="inventory_unavailable",
                            reason="Inventory unavailable while committing stock; payment refunded.")
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


def _held_reservation(order_id: int):
    """The reservation inventory holds (or sold) for this order, or None; PeerUnavailable when it cannot tell."""
    try:
        reservations = inventory.inventory_reservations_for_order(order_id=order_id)
    except PeerRefused as exc:
        raise PeerUnavailable(inventory.PEER, f"reservations lookup refused: {exc.message}", status=exc.status) from exc
    return next((r for r in reservations if r.status in ("HELD", "COMMITTED")), None)


def _start_compensation(order_id: int, *, expect: str, reason: str, code: str, **changes) -> None:
    _advance(
        order_id,
        expect=expect,
        events=[("compensating", f"compensating: {reason}")],
        saga_step=SagaStep.COMPENSATING,
        status_reason=reason[:255],
        status_reason_code=code,
        **changes,
    )


def _finish_cancelled(order_id: int, *, expect: str, reason: str, step: str, code: str) -> None:
    _advance(
        order_id,
        expect=expect,
        events=[(step, reason), ("cancelled", f"cancelled: {reason}")],
        status=OrderStatus.CANCELLED,
        saga_step=SagaStep.DONE,
        status_reason=reason[:255],
        status_reason_code=code,
    )


def _advance(order_id: int, *, expect: str, events=(), then=None, **changes) -> Order:
    """Record a step's outcome: lock the order, check it is still at ``expect``, apply, log events."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_step != expect:
            raise SagaMoved(f"order {order_id} is at {order.saga_step}, not {expect}")
        for name, value in changes.items():
            setattr(order, name, value)
        order.saga_lease_until = _lease_end(held_by_worker=_is_task(order.saga_runner))
        order.save()
        if then is not None:
            then(order)
        OrderEvent.objects.bulk_create(
            [OrderEvent(order=order, status=order.status, step=step, note=note[:255]) for step, note in events]
        )
    if changes.get("saga_step") == SagaStep.DONE:
        _count_outcome(order)
    return order


def _count_outcome(order: Order) -> None:
    """One sample per saga that ended: ``confirmed``, or ``cancelled_<kind>`` (out_of_stock, declined, gave_up...)."""
    if order.status == OrderStatus.CONFIRMED:
        outcome = "confirmed"
    else:
        outcome = f"cancelled_{order.status_reason_code or 'other'}"
    telemetry.event("saga.outcome", outcome=outcome, order_id=order.pk)
    try:
        metrics.SAGA_OUTCOMES.labels(outcome).inc()
    except OSError as exc:  # e.g. PROMETHEUS_MULTIPROC_DIR removed under a running worker
        log.warning("saga outcome %s not counted: %s", outcome, exc)


def _send_saga_task(*, order_id: int, runner: str) -> None:
    """Queue the worker's task for this order, named ``runner`` (the lease's holder).

    If the broker cannot take it, the lease is given back so that the recovery
    job queues the saga again as soon as the broker is back.
    """
    from .tasks import order_saga_task  # tasks import this module

    try:
        order_saga_task.apply_async(args=[order_id], task_id=runner)
    except Exception as exc:  # noqa: BLE001 — whatever the transport raises, the order must not be lost
        log.warning("order %s: the saga could not be queued (%s: %s); recovery will queue it again",
                    order_id, type(exc).__name__, exc)
        order_saga_release(order_id=order_id, runner=runner)
        order = Order.objects.get(pk=order_id)
        _event(order, "queue_failed", "the worker's queue is unreachable; the saga will be queued again")


def _event(order: Order, step: str, note: str) -> None:
    OrderEvent.objects.create(order=order, status=order.status, step=step, note=note[:255])


def _request_runner() -> str:
    return f"request-{uuid.uuid4().hex}"


def _task_runner() -> str:
    # Also the Celery task's id: a redelivered or retried task keeps it, and so keeps its lease.
    return f"task-{uuid.uuid4()}"


def _is_task(runner: str) -> bool:
    return runner.startswith("task-")


def _lease_end(*, held_by_worker: bool = False):
    """When a lease taken now runs out.

    A request, or a task still waiting in the broker, holds it for
    ``ORDER_SAGA_LEASE_SECONDS``; a task a worker has received holds it for the
    shorter ``ORDER_SAGA_TASK_LEASE_SECONDS``, renewed at every step, so that the
    sagas of a killed worker are recovered soon after, not minutes later.
    """
    seconds = settings.ORDER_SAGA_TASK_LEASE_SECONDS if held_by_worker else settings.ORDER_SAGA_LEASE_SECONDS
    return clock() + timedelta(seconds=seconds)


def _lease_alive(order: Order) -> bool:
    return order.saga_lease_until is not None and order.saga_lease_until > clock()


def _money(order: Order) -> str:
    return f"{order.total_cents / 100:.2f} {order.currency}"
