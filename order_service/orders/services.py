"""Writes of the orders app: create, modify, check out and cancel an order.

A checkout or a cancellation starts the order's saga (``orders.saga``): these
functions take the saga's lease for the runner and hand it the order, in the
request (sync mode) or queued for the Celery worker (async mode, ``orders.lab``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from chassis.auth import LabUser
from chassis.client import PeerUnavailable, breakers_check
from chassis.errors import Conflict, Forbidden, NotFound, Unavailable
from chassis.idempotency import IdempotentCreate, fingerprint
from chassis.lab import resilience

from . import lab
from .clients import PeerRefused, inventory
from .models import Order, OrderLine, OrderStatus, SagaStep
from .saga import (
    CANCELLED_BY_CUSTOMER,
    lease_alive,
    lease_end,
    leases,
    order_saga_enqueue,
    order_saga_resume,
    order_saga_run,
    record_event,
    record_events,
    request_runner,
    send_saga_task,
    task_runner,
    with_lines_and_history,
)

log = logging.getLogger("orders.saga")

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


# --------------------------------------------------------------------------- create, modify


def order_create(
    *,
    customer_id: int,
    idempotency_key: str,
    lines: list[dict],
    payment_method: str,
    shipping_address: dict | None = None,
    checkout: bool = True,
    saga_mode: str | None = None,
) -> OrderOutcome:
    """Create an order from a validated body and, unless it is a draft, run its checkout saga.

    ``saga_mode`` ("sync" or "async"), the lab admin's choice for this one order, wins over the
    lab's saga mode (which stays as it is for everyone else).

    The same ``(customer_id, idempotency_key)`` with the same body returns the
    existing order (resuming its saga if an earlier run was interrupted); with
    another body it is a 409 ``idempotency_conflict``. Unknown or inactive skus
    are a 400 that leaves no order: a synchronous checkout learns them from the
    reservation, which also prices the lines (so a checkout makes three peer calls:
    reserve, charge, commit); a draft or an async checkout from a catalog lookup
    before anything is written (a 503 when inventory is unreachable then). A
    synchronous checkout whose reservation our breaker or bulkhead turns away unsent
    is a 503 ``dependency_unavailable`` that leaves no order either; one whose
    reservation was sent and not answered is the saga's to settle (CANCELLED, or
    PENDING until it can tell).
    """
    started = time.perf_counter()
    request_fingerprint = fingerprint(
        {"lines": lines, "payment_method": payment_method, "shipping_address": shipping_address, "checkout": checkout}
    )
    once = IdempotentCreate(
        lookup=lambda: Order.objects.filter(customer_id=customer_id, idempotency_key=idempotency_key).first(),
        request_fingerprint=request_fingerprint,
        conflict_message="This Idempotency-Key was already used with a different body; use a new key for a new order.",
        conflict_extra=lambda order: {"order_id": order.pk},
    )
    saga = lab.saga_settings()
    in_background = checkout and (saga_mode or saga["mode"]) == "async"
    runner = (task_runner() if in_background else request_runner()) if checkout else ""

    # A checkout writes first and learns a replay from the unique key (one lookup less for every
    # new order); a draft looks first. An async checkout's catalog lookup (a peer call) comes
    # before its write: a replay is told by the key too, or, when that lookup fails, looked up then.
    writes_first = checkout

    def create() -> Order:
        if writes_first and not in_background:
            try:
                _fail_fast(started)
            except Unavailable:
                # A replay is answered, breaker open or not; a first request, the usual refusal, is
                # told by an EXISTS (no columns loaded) before the order is looked up.
                keyed = Order.objects.filter(customer_id=customer_id, idempotency_key=idempotency_key)
                earlier = once.replay() if keyed.exists() else None
                if earlier is not None:
                    return earlier
                raise
            # The reservation prices the lines and refuses unknown skus: no catalog lookup first.
            priced_lines, currency = _unpriced_lines(lines), "EUR"
        elif writes_first:
            try:
                priced_lines, currency = _priced_lines(lines)
            except (Unavailable, ValidationError):
                earlier = once.replay()  # a replay is answered, inventory down or its skus gone since
                if earlier is not None:
                    return earlier
                raise
        else:
            priced_lines, currency = _priced_lines(lines)
        created_at = timezone.now()
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
                saga_lease_until=lease_end() if checkout else None,
                saga_runner=runner,
                created_at=created_at,
                # The worker retries a peer that is down until then, counted from the order's creation.
                saga_deadline=created_at + timedelta(seconds=saga["deadline_seconds"]) if in_background else None,
            )
            for line in priced_lines:
                line.order = order
            OrderLine.objects.bulk_create(priced_lines)
            # The saga (run with this very order) and the answer read the lines and the history
            # from here, not from the database (a queued saga's worker reads them afresh).
            with_lines_and_history(order, priced_lines, [])
            events = [("received", "order received" if checkout else "order received as a draft")]
            if in_background:
                events.append(
                    ("queued", f"checkout queued for the worker (gives up after {saga['deadline_seconds']} s)")
                )
            record_events(order, events)
        return order

    order, replayed = once.run(create, look_first=not writes_first)
    if replayed:
        return _replayed(order)
    if in_background:
        send_saga_task(order_id=order.pk, runner=runner, answered=order)
        return OrderOutcome(order=order, queued=True)
    if checkout:
        try:
            order = order_saga_run(order_id=order.pk, runner=runner, raise_unreserved=True, order=order)
        except inventory.LinesRefused as exc:
            # Nothing was reserved or charged: the order, saved a moment ago, goes as if never placed.
            log.info("order %s: inventory refused its lines: %s", order.pk, exc)
            Order.objects.filter(pk=order.pk).delete()
            raise ValidationError({"lines": exc.messages}) from exc
        except PeerUnavailable as exc:
            # Our breaker or bulkhead turned the reservation away unsent: nothing is held anywhere.
            log.info("order %s: reservation not sent: %s", order.pk, exc)
            Order.objects.filter(pk=order.pk).delete()
            retry_after = max(1, math.ceil(exc.retry_after or 1))
            raise Unavailable(
                "The inventory service is unavailable, so this checkout cannot complete; nothing was "
                f"reserved or charged and no order was saved. Try again in {retry_after} s.",
                code="dependency_unavailable",
                headers={"Retry-After": str(retry_after)},
                peer=exc.peer,
                retry_after=retry_after,
            ) from exc
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
        record_event(order, "modified", f"order modified: {', '.join(changed)}")
    return OrderOutcome(order=order)


# The peers a checkout saga calls, each of which must answer for it to succeed.
SAGA_PEERS = ("inventory", "payment")


def _fail_fast(started: float) -> None:
    """A synchronous checkout with a breaker open on a peer it needs is refused before its first step.

    Nothing is looked up, reserved or written: a 503 ``dependency_unavailable`` with ``Retry-After``
    (the seconds the breaker stays open), instead of an order that holds stock while it waits.
    """
    try:
        breakers_check(SAGA_PEERS)
    except PeerUnavailable as exc:
        retry_after = max(1, math.ceil(exc.retry_after or 1))
        resilience.fail_fast_note(peer=exc.peer, retry_after=retry_after, ms=(time.perf_counter() - started) * 1000)
        raise Unavailable(
            f"The {exc.peer} service is unavailable (its circuit breaker is open), so this checkout cannot "
            f"complete; nothing was reserved or charged and no order was saved. Try again in {retry_after} s.",
            code="dependency_unavailable",
            headers={"Retry-After": str(retry_after)},
            peer=exc.peer,
            retry_after=retry_after,
        ) from exc


def _ensure_modifiable(order: Order) -> None:
    if not order.is_draft:
        raise Conflict(
            f"Only a draft can be modified; this order is {order.status} (saga step {order.saga_step}).",
            code="order_not_modifiable",
        )


def _priced_lines(lines: list[dict]) -> tuple[list[OrderLine], str]:
    """Unsaved lines priced from the catalog (a 400 for unknown skus, a 503 when inventory is down)."""
    skus = [line["sku"] for line in lines]
    try:
        products = inventory.inventory_products_lookup(skus=skus)
    except (PeerUnavailable, PeerRefused) as exc:
        if isinstance(exc, PeerRefused) and exc.status == 400:
            # Inventory refused the client's own input (a sku it cannot even look up): a 400
            # naming the field, not an outage.
            log.info("product lookup refused: %s", exc)
            raise ValidationError({"lines": [f"The inventory service refused these skus: {exc.message}"]}) from exc
        log.warning("product lookup failed: %s", exc)
        raise Unavailable(
            "The inventory service is unavailable, so the products cannot be checked; "
            "nothing was saved. Try again shortly.",
            code="dependency_unavailable",
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


def _unpriced_lines(lines: list[dict]) -> list[OrderLine]:
    """Unsaved lines for a checkout: the reservation's answer gives their names and prices."""
    return [OrderLine(sku=line["sku"], name="", quantity=line["quantity"], unit_price_cents=0) for line in lines]


def _replayed(order: Order) -> OrderOutcome:
    """Answer a replay of the request that created ``order``, finishing its saga if an earlier run was interrupted."""
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
    started = time.perf_counter()
    saga = lab.saga_settings()
    in_background = saga["mode"] == "async"
    runner = task_runner() if in_background else request_runner()
    with transaction.atomic():
        order = _order_for_owner(order_id=order_id, user=user, lock=True)
        if not order.is_draft:
            raise Conflict(
                f"Only a draft can be checked out; this order is {order.status} (saga step {order.saga_step}).",
                code="order_not_draft",
            )
        if not in_background:
            _fail_fast(started)  # the draft stays as it was
        order.saga_step = SagaStep.RESERVING
        order.saga_lease_until = lease_end()
        order.saga_runner = runner
        if in_background:
            order.saga_deadline = leases.clock() + timedelta(seconds=saga["deadline_seconds"])
        order.save(update_fields=["saga_step", "saga_lease_until", "saga_runner", "saga_deadline", "updated_at"])
        record_event(order, "checkout", "checkout started")
        if in_background:
            record_event(
                order, "queued", f"checkout queued for the worker (gives up after {saga['deadline_seconds']} s)"
            )
    if in_background:
        send_saga_task(order_id=order.pk, runner=runner)
        return OrderOutcome(order=order, queued=True)
    return OrderOutcome(order=order_saga_run(order_id=order.pk, runner=runner))


def order_cancel(*, order_id: int, user: LabUser) -> OrderOutcome:
    """Cancel an order for its owner: a draft at once; a confirmed order with a refund and restock.

    A cancellation whose peers are down stops where it is (its progress is
    recorded) and answers 503; sending the cancel again finishes it.
    """
    runner = request_runner()
    with transaction.atomic():
        order = _order_for_owner(order_id=order_id, user=user, lock=True)
        if order.status not in (OrderStatus.PENDING, OrderStatus.CONFIRMED):
            raise Conflict(f"An order that is {order.status} cannot be cancelled.", code="order_not_cancellable")
        if order.is_draft:
            order.status = OrderStatus.CANCELLED
            order.saga_step = SagaStep.DONE
            order.status_reason = CANCELLED_BY_CUSTOMER
            order.status_reason_code = "customer"
            order.save(update_fields=["status", "saga_step", "status_reason", "status_reason_code", "updated_at"])
            record_event(order, "cancelled", "cancelled by customer (draft)")
            return OrderOutcome(order=order)
        if lease_alive(order):
            raise Conflict(
                "This order's checkout or cancellation is running right now; try again in a moment.",
                code="order_not_cancellable",
            )
        if order.saga_step == SagaStep.COMPENSATING:
            record_event(order, "compensating", "cancellation resumed")
        else:
            # A confirmed order, or a checkout that an outage interrupted: undo what was done.
            order.saga_step = SagaStep.COMPENSATING
            order.status_reason = CANCELLED_BY_CUSTOMER
            order.status_reason_code = "customer"
            record_event(order, "cancel_requested", "cancellation requested by customer")
        order.saga_lease_until = lease_end()
        order.saga_runner = runner
        order.save(
            update_fields=[
                "saga_step",
                "status_reason",
                "status_reason_code",
                "saga_lease_until",
                "saga_runner",
                "updated_at",
            ]
        )

    order = order_saga_run(order_id=order_id, runner=runner)
    if not order.saga_finished:
        raise Unavailable(
            "A service needed to cancel this order is unavailable; what was done is recorded. "
            "Send the cancel again to finish it.",
            code="dependency_unavailable",
            order_id=order.pk,
        )
    return OrderOutcome(order=order)


def _order_for_owner(*, order_id: int, user: LabUser, lock: bool = False) -> Order:
    queryset = Order.objects.select_for_update() if lock else Order.objects
    order = queryset.filter(pk=order_id).first()
    if order is None or (order.customer_id != user.id and not user.is_staff):
        raise NotFound("No such order.")
    if order.customer_id != user.id:
        raise Forbidden("Only the customer who placed this order can change it.")
    return order
