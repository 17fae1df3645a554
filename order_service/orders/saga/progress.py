"""The saga's bookkeeping: record a step's outcome on the order, with its timeline events, and count the outcome.

Every change of a running saga goes through :func:`advance`, which writes the
order only if it is still at the step the runner expected (else
:class:`SagaMoved`: another runner took over), so two runners never both record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from chassis import metrics, telemetry
from chassis.sql import update_matched

from ..models import Order, OrderEvent, OrderLine, OrderStatus, SagaStep
from . import leases

log = logging.getLogger("orders.saga")


class SagaMoved(Exception):
    """The order is no longer at the step this runner expected: another runner took over."""


def record_event(order: Order, step: str, note: str) -> OrderEvent:
    """Add one entry to the order's timeline, with the order's status as it is now."""
    event = OrderEvent.objects.create(order=order, status=order.status, step=step, note=note[:255])
    _remember_events(order, [event])
    return event


def record_events(order: Order, events: Iterable[tuple[str, str]]) -> list[OrderEvent]:
    """Add ``(step, note)`` entries to the order's timeline in one ``INSERT``, as :func:`record_event` adds one."""
    written = OrderEvent.objects.bulk_create(
        [OrderEvent(order=order, status=order.status, step=step, note=note[:255]) for step, note in events]
    )
    _remember_events(order, written)
    return written


def with_lines_and_history(order: Order, lines: list, events: list) -> Order:
    """``order`` answering ``.lines.all()`` and ``.events.all()`` from what its writer holds, unread.

    :func:`advance` and :func:`record_event` append the events they write, so the order a
    checkout ends with can be answered without reading it back.
    """
    order._prefetched_objects_cache = {"lines": lines, "events": events}  # noqa: SLF001 — as prefetch_related would
    return order


def forget_held(order: Order) -> None:
    """``order`` no longer answers its lines and history from memory: whoever answers it reads it again."""
    cache = getattr(order, "_prefetched_objects_cache", None)
    if cache is not None:
        cache.pop("lines", None)
        cache.pop("events", None)


def _remember_events(order: Order, events: list[OrderEvent]) -> None:
    cache = getattr(order, "_prefetched_objects_cache", None)
    if cache is not None and isinstance(cache.get("events"), list):
        cache["events"].extend(events)


def start_compensation(
    order_id: int,
    *,
    expect: str,
    reason: str,
    code: str,
    charge_outcome_unknown: bool | None = None,
    reservation_outcome_unknown: bool | None = None,
    order: Order | None = None,
) -> Order:
    return advance(
        order_id,
        order=order,
        expect=expect,
        events=[("compensating", f"compensating: {reason}")],
        saga_step=SagaStep.COMPENSATING,
        status_reason=reason[:255],
        status_reason_code=code,
        charge_outcome_unknown=charge_outcome_unknown,
        reservation_outcome_unknown=reservation_outcome_unknown,
    )


def finish_cancelled(
    order_id: int, *, expect: str, reason: str, step: str, code: str, order: Order | None = None
) -> Order:
    return advance(
        order_id,
        order=order,
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
    order: Order | None = None,
    events: Iterable[tuple[str, str]] = (),
    lines: list[OrderLine] | None = None,
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
    """Record a step's outcome: if the order is still at ``expect``, apply the changes and log the events.

    One conditional ``UPDATE ... WHERE saga_step = expect`` both checks and writes (no
    ``SELECT ... FOR UPDATE`` first): when it matches no row another runner took over
    (:class:`SagaMoved`). Every field given (not None) is set, only those; ``events``
    are ``(step, note)`` pairs for its timeline, and ``lines`` are the order's lines whose
    name and unit price change with it (on MySQL/MariaDB in the same ``UPDATE``, see
    :func:`_update_with_lines`). The runner's lease is renewed, or, once the saga is done,
    given back in the same statement.

    ``order`` is the runner's copy of the order (read when not given): it is updated
    in place and returned, so the runner need not read the order again. An outcome
    :func:`defer` left on that copy is written first, in the same statements: the
    ``UPDATE`` then expects the step that outcome expected.
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
    changes = {name: value for name, value in changes.items() if value is not None}
    if order is None:
        order = Order.objects.get(pk=order_id)
    pending = [
        OrderEvent(order=order, status=order.status, step=step, note=note[:255], created_at=timezone.now())
        for step, note in events
    ]
    deferred = getattr(order, _DEFERRED, None)
    if deferred is not None:
        expect, changes, pending = deferred.expect, {**deferred.changes, **changes}, [*deferred.events, *pending]
    done = changes.get("saga_step") == SagaStep.DONE
    changes["saga_lease_until"] = None if done else leases.lease_end(held_by_worker=leases.is_task(order.saga_runner))
    changes["updated_at"] = timezone.now()
    with transaction.atomic():
        if lines and connection.vendor == "mysql":
            matched = _update_with_lines(order_id, expect=expect, changes=changes, lines=lines)
        else:
            matched = Order.objects.filter(pk=order_id, saga_step=expect).update(**changes)
            if matched and lines:
                OrderLine.objects.bulk_update(lines, LINE_FIELDS)
        if not matched:
            if deferred is not None:
                delattr(order, _DEFERRED)  # another runner took over: its record stands, not ours
            raise SagaMoved(f"order {order_id} is no longer at {expect}")
        if deferred is not None:
            delattr(order, _DEFERRED)
        for name, value in changes.items():
            setattr(order, name, value)
        for event in pending[len(pending) - len(events) :]:
            event.status = order.status  # the status this write leaves, as the events of a step have always had
        written = OrderEvent.objects.bulk_create(pending)
    _remember_events(order, written)
    if done:
        _count_outcome(order)
    return order


# What a reservation's answer changes on the order's lines.
LINE_FIELDS = ("unit_price_cents", "name")


def _update_with_lines(order_id: int, *, expect: str, changes: dict, lines: list[OrderLine]) -> bool:
    """The conditional UPDATE of the order and of its ``lines``' name and price as one statement (MySQL/MariaDB).

    The ORM writes one table per statement; this is ``UPDATE ... WHERE id = ? AND saga_step =
    <expect>`` of the order and the ``bulk_update`` of its lines in one multi-table ``UPDATE``:
    no line changes unless the order is still at ``expect`` (False, nothing written).
    """
    quote = connection.ops.quote_name
    sets, params = [], []
    for name, value in changes.items():
        field = Order._meta.get_field(name)
        sets.append(f"o.{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    for name in LINE_FIELDS:
        field = OrderLine._meta.get_field(name)
        sets.append(f"l.{quote(field.column)} = CASE l.{quote('id')} {' '.join(['WHEN %s THEN %s'] * len(lines))} END")
        for line in lines:
            params += [line.pk, field.get_db_prep_save(getattr(line, name), connection)]
    sql = (
        f"UPDATE {quote(Order._meta.db_table)} AS o, {quote(OrderLine._meta.db_table)} AS l SET {', '.join(sets)} "
        f"WHERE o.{quote('id')} = %s AND o.{quote('saga_step')} = %s "
        f"AND l.{quote('order_id')} = o.{quote('id')} AND l.{quote('id')} IN ({', '.join(['%s'] * len(lines))})"
    )
    params += [order_id, expect, *(line.pk for line in lines)]
    return update_matched(
        sql,
        params,
        expected=1 + len(lines),
        mismatch=lambda matched: f"order {order_id}: {matched - 1} of its {len(lines)} lines found",
    )


_DEFERRED = "_saga_deferred"


@dataclass(frozen=True)
class _Deferred:
    expect: str
    changes: dict
    events: list[OrderEvent]


def defer(order: Order, *, expect: str, events: Iterable[tuple[str, str]] = (), **fields) -> Order:
    """Record a step's outcome on the runner's copy only, to be written with the next :func:`advance`.

    For an outcome that a crash may lose because the saga redoes it (a charge answered, and
    sent again under the same key by whoever resumes the saga at ``expect``): the next
    ``advance`` on this copy writes both in one ``UPDATE ... WHERE saga_step = expect`` and
    one ``INSERT`` of their events, each event with the time it happened. ``fields`` are
    :func:`advance`'s. Whoever stops before that ``advance`` calls :func:`write_deferred`.
    """
    if getattr(order, _DEFERRED, None) is not None:
        raise RuntimeError(f"order {order.pk}: an outcome is already deferred")
    changes = {name: value for name, value in fields.items() if value is not None}
    now = timezone.now()
    deferred = _Deferred(
        expect=expect,
        changes=changes,
        events=[
            OrderEvent(
                order=order, status=fields.get("status") or order.status, step=step, note=note[:255], created_at=now
            )
            for step, note in events
        ],
    )
    for name, value in changes.items():
        setattr(order, name, value)
    setattr(order, _DEFERRED, deferred)
    return order


def write_deferred(order: Order | None) -> None:
    """Write the outcome :func:`defer` left on ``order``, if any, on its own (the next step did not get to it)."""
    deferred = getattr(order, _DEFERRED, None) if order is not None else None
    if deferred is not None:
        advance(order.pk, order=order, expect=deferred.expect)


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
