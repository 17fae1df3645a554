"""The saga's bookkeeping: record a step's outcome on the order, with its timeline events, and count the outcome.

Every change of a running saga goes through :func:`advance`, which locks the
order and checks it is still at the step the runner expected (else
:class:`SagaMoved`: another runner took over), so two runners never both record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from django.db import transaction

from chassis import metrics, telemetry

from ..models import Order, OrderEvent, OrderStatus, SagaStep
from . import leases

log = logging.getLogger("orders.saga")


class SagaMoved(Exception):
    """The order is no longer at the step this runner expected: another runner took over."""


def record_event(order: Order, step: str, note: str) -> None:
    """Add one entry to the order's timeline, with the order's status as it is now."""
    OrderEvent.objects.create(order=order, status=order.status, step=step, note=note[:255])


def start_compensation(
    order_id: int,
    *,
    expect: str,
    reason: str,
    code: str,
    charge_outcome_unknown: bool | None = None,
    reservation_outcome_unknown: bool | None = None,
) -> None:
    advance(
        order_id,
        expect=expect,
        events=[("compensating", f"compensating: {reason}")],
        saga_step=SagaStep.COMPENSATING,
        status_reason=reason[:255],
        status_reason_code=code,
        charge_outcome_unknown=charge_outcome_unknown,
        reservation_outcome_unknown=reservation_outcome_unknown,
    )


def finish_cancelled(order_id: int, *, expect: str, reason: str, step: str, code: str) -> None:
    advance(
        order_id,
        expect=expect,
        events=[(step, reason), ("cancelled", f"cancelled: {reason}")],
        status=OrderStatus.CANCELLED,
        saga_step=SagaStep.DONE,
        status_reason=reason[:255],
        status_reason_code=code,
    )


def advance(
    order_id: int,
    *,
    expect: str,
    events: Iterable[tuple[str, str]] = (),
    then: Callable[[Order], None] | None = None,
    saga_step: str | None = None,
    status: str | None = None,
    status_reason: str | None = None,
    status_reason_code: str | None = None,
    reservation_id: str | None = None,
    reservation_outcome_unknown: bool | None = None,
    charge_id: str | None = None,
    charge_outcome_unknown: bool | None = None,
    refund_id: str | None = None,
    stock_released: bool | None = None,
    total_cents: int | None = None,
    currency: str | None = None,
) -> Order:
    """Record a step's outcome: lock the order, check it is still at ``expect``, apply, log events.

    Every field given (not None) is set on the order; ``events`` are ``(step, note)``
    pairs for its timeline, and ``then`` runs on the locked order in the same transaction.
    """
    changes = {
        "saga_step": saga_step,
        "status": status,
        "status_reason": status_reason,
        "status_reason_code": status_reason_code,
        "reservation_id": reservation_id,
        "reservation_outcome_unknown": reservation_outcome_unknown,
        "charge_id": charge_id,
        "charge_outcome_unknown": charge_outcome_unknown,
        "refund_id": refund_id,
        "stock_released": stock_released,
        "total_cents": total_cents,
        "currency": currency,
    }
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_step != expect:
            raise SagaMoved(f"order {order_id} is at {order.saga_step}, not {expect}")
        for name, value in changes.items():
            if value is not None:
                setattr(order, name, value)
        order.saga_lease_until = leases.lease_end(held_by_worker=leases.is_task(order.saga_runner))
        order.save()
        if then is not None:
            then(order)
        OrderEvent.objects.bulk_create(
            [OrderEvent(order=order, status=order.status, step=step, note=note[:255]) for step, note in events]
        )
    if saga_step == SagaStep.DONE:
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


def money(order: Order) -> str:
    return f"{order.total_cents / 100:.2f} {order.currency}"
