"""The saga's runner: run an order's saga from its ``saga_step`` to the end, resume it, or give it up.

Because the progress is on the order, :func:`order_saga_run` can resume any
saga from its ``saga_step``: a replay of the same request, a retried cancel or
the background worker (``orders.background``) finishes what an interrupted run left.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

from django.db import transaction

from chassis import deadline, telemetry
from chassis.client import PeerUnavailable

from ..clients import inventory
from ..models import Order, SagaStep
from . import leases
from .progress import SagaMoved, advance, finish_cancelled, record_event, start_compensation
from .steps import STEPS, SagaPolicy, reserve_refused

log = logging.getLogger("orders.saga")

# A saga takes at most a dozen steps (three forward, four back, lookups): more means a bug, not progress.
MAX_STEPS_PER_RUN = 50
# The steps a request's deadline stops (X-Request-Deadline, chassis.deadline): before the
# charge, giving up costs a release at most. Once charged, finishing (commit) or undoing
# (compensation) must run to its end, so those steps run free of the deadline.
STOPPED_BY_DEADLINE = frozenset({SagaStep.RESERVING, SagaStep.RESERVED})


def order_saga_resume(*, order_id: int, on_unavailable: SagaPolicy = "compensate") -> Order:
    """Take over an interrupted saga if nobody runs it now, and run it here; return the order as it stands."""
    runner = leases.request_runner()
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_finished or leases.lease_alive(order):
            return order
        order.saga_lease_until = leases.lease_end()
        order.saga_runner = runner
        order.save(update_fields=["saga_lease_until", "saga_runner", "updated_at"])
        record_event(order, "resumed", f"saga resumed at step {order.saga_step}")
    return order_saga_run(order_id=order_id, on_unavailable=on_unavailable, runner=runner)


def order_saga_give_up(*, order_id: int, expect: str, peer: str) -> None:
    """The deadline has passed with ``peer`` still down: undo what was done (the compensation may wait for peers)."""
    order = Order.objects.get(pk=order_id)
    started = order.events.filter(step="checkout").values_list("created_at", flat=True).last() or order.created_at
    budget = round((order.saga_deadline - started).total_seconds()) if order.saga_deadline else 0
    # One of the attempts may have reserved before its answer was lost.
    reservation_outcome_unknown = True if expect == SagaStep.RESERVING else None
    start_compensation(
        order_id,
        expect=expect,
        reason=f"Gave up after {budget} s: {peer} unavailable",
        code="gave_up",
        reservation_outcome_unknown=reservation_outcome_unknown,
    )


def order_saga_run(
    *,
    order_id: int,
    on_unavailable: SagaPolicy = "compensate",
    runner: str = "",
    keep_lease: bool = False,
    raise_unreserved: bool = False,
    order: Order | None = None,
) -> Order:
    """Run the saga of an order whose lease ``runner`` holds, from its ``saga_step`` to the end.

    ``on_unavailable`` says what a peer that does not answer means: in the
    synchronous request (``"compensate"``) the saga decides at once (cancel,
    compensate, or stop where it is when nothing safe can be decided); a
    background worker (``"raise"``) gets the :class:`PeerUnavailable` to retry later.
    A reservation that holds nothing at inventory, because inventory refused its lines
    (unknown or inactive skus) or our breaker or bulkhead turned the call away unsent,
    cancels the order; with ``raise_unreserved`` it raises (:class:`inventory.LinesRefused`,
    or the :class:`PeerUnavailable` with ``rejected``) with nothing recorded, so that the
    request placing the order answers 400 or 503 and keeps no order instead.
    The lease is given back at the end unless ``keep_lease`` (the worker does it).
    ``order`` is the caller's copy of the order as it has just written it (else it is read).
    """
    try:
        charge_just_recorded = False
        for _ in range(MAX_STEPS_PER_RUN):
            if order is None:
                order = Order.objects.get(pk=order_id)
            if order.saga_finished:
                return order
            # A charge this run has just recorded (with the reservation) has not been sent yet: it
            # runs under the request's deadline, as one sent from "reserved" does.
            under_deadline = order.saga_step in STOPPED_BY_DEADLINE or charge_just_recorded
            charge_just_recorded = False
            if under_deadline and deadline.expired():
                _give_up_at_deadline(order)
                order = None
                continue
            try:
                step = STEPS[order.saga_step]
                with (
                    nullcontext() if under_deadline else deadline.lifted(),
                    telemetry.span(step.span_name, **{"order.id": order_id, "saga.step": order.saga_step}),
                ):
                    was = order.saga_step
                    order = step.run(order, on_unavailable)
                    charge_just_recorded = (
                        was == SagaStep.RESERVING and order is not None and order.saga_step == SagaStep.CHARGING
                    )
            except inventory.LinesRefused as exc:
                if raise_unreserved:
                    raise
                order = reserve_refused(order_id, exc)
            except PeerUnavailable as exc:
                if raise_unreserved and exc.rejected and order.saga_step == SagaStep.RESERVING:
                    raise
                order = None
                _note_unknown_reservation(order_id, exc)
                if on_unavailable == "raise":
                    raise
                if not _after_unavailable(order_id, exc):
                    return Order.objects.get(pk=order_id)
        log.error("order %s: saga still running after %d steps; leaving it where it is", order_id, MAX_STEPS_PER_RUN)
        order = None
        return Order.objects.get(pk=order_id)
    except SagaMoved:
        order = None
        return Order.objects.get(pk=order_id)
    finally:
        # The step that finished the saga gave the lease back with its last write.
        released = order is not None and order.saga_finished and order.saga_lease_until is None
        if not keep_lease and not released:
            leases.order_saga_release(order_id=order_id, runner=runner)


def _give_up_at_deadline(order: Order) -> None:
    """The client's deadline passed before the charge: whoever asked has given up, so stop here and undo."""
    telemetry.event("lab.deadline_passed", order_id=order.pk, step=order.saga_step)
    if order.saga_step == SagaStep.RESERVING and not order.reservation_outcome_unknown:
        reason = "The request's deadline passed before stock was reserved; nothing was reserved or charged."
        finish_cancelled(order.pk, expect=order.saga_step, reason=reason, step="deadline", code="deadline_exceeded")
        return
    start_compensation(
        order.pk,
        expect=order.saga_step,
        reason="The request's deadline passed before payment; nothing was charged and the stock is released.",
        code="deadline_exceeded",
    )


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
            start_compensation(order_id, expect=step, reason=reason, code="inventory_unavailable")
        else:
            # Our breaker or bulkhead refused before anything was sent: nothing to undo.
            finish_cancelled(
                order_id, expect=step, reason=reason, step="inventory_unavailable", code="inventory_unavailable"
            )
        return True
    if step == SagaStep.COMMITTING:
        start_compensation(
            order_id,
            expect=step,
            code="inventory_unavailable",
            reason="Inventory unavailable while committing stock; payment refunded.",
        )
        return True
    # Charging with no way to learn the outcome, or a compensation that cannot go on:
    # deciding now could lose money or stock, so the order stays here until a later run.
    advance(order_id, expect=step, events=[("paused", f"paused: {exc.peer} unavailable ({exc.reason})")])
    return False
