"""Writes of the catalog: products, restocks, and the reservation life cycle.

Reservation life cycle (driven by order_service's checkout saga)::

    HELD ──commit──▶ COMMITTED ──release──▶ RETURNED
      │ └──release──▶ RELEASED
      └──sweeper (past expires_at)──▶ EXPIRED

How stock stays right under concurrent load: every change runs in one
transaction that moves the quantities with one conditional ``UPDATE`` (a row
changes only if its counter holds enough) and appends the matching
``StockMovement`` rows. A reservation and a commit, on every checkout's path,
let that ``UPDATE`` take the row locks itself (in ascending product id order,
the order of its scan) and learn a shortage from the rows it could not change;
a restock, a release and the sweeper lock the ``Stock`` rows first with
``SELECT ... FOR UPDATE``, in the same ascending order, so two transactions
sharing products queue instead of deadlocking. If the database still aborts a
transaction for a deadlock or a lock wait timeout, it is replayed a few times,
then answered 503 ``stock_busy`` (never 500).

A HELD reservation past its ``expires_at`` can still be committed until the
sweeper (:func:`reservations_expire`) has expired it: the saga may already
have charged the customer, and refusing would only force a refund. Commit and
the sweeper lock the same reservation row, so exactly one of them wins.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TypeVar

from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Case, F, PositiveIntegerField, Q, When
from django.utils import timezone

from chassis.errors import Conflict, InvalidRequest, NotFound, Unavailable
from chassis.idempotency import IdempotentCreate, fingerprint
from chassis.sql import update_matched

from .models import Product, Reservation, ReservationLine, Stock, StockMovement
from .selectors import reservation_get

log = logging.getLogger(__name__)

T = TypeVar("T")

RESERVATION_TTL_DEFAULT = 900
# Keeps every counter far below the 2**32 - 1 an unsigned MySQL INT can hold.
STOCK_COUNTER_MAX = 2_000_000_000
LOCK_ATTEMPTS = 3
# MySQL/MariaDB: 1205 lock wait timeout, 1213 deadlock (the transaction was rolled back).
_LOCK_CONFLICT_CODES = frozenset({1205, 1213})

Status = Reservation.Status
Kind = StockMovement.Kind


# --- transactions -----------------------------------------------------------------


def _is_lock_conflict(exc: OperationalError) -> bool:
    code = exc.args[0] if exc.args else None
    return code in _LOCK_CONFLICT_CODES or (isinstance(code, str) and "database is locked" in code)


def run_in_transaction(work: Callable[[], T], *, attempts: int = LOCK_ATTEMPTS) -> T:
    """Run ``work`` in one transaction, replayed when the database aborted it for a lock conflict.

    Inside an enclosing transaction there is nothing safe to replay, so the
    error propagates. After ``attempts`` conflicts, a 503 ``stock_busy``.
    """
    nested = transaction.get_connection().in_atomic_block
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic():
                return work()
        except OperationalError as exc:
            if nested or not _is_lock_conflict(exc):
                raise
            log.warning("stock transaction aborted by a lock conflict (attempt %d/%d): %s", attempt, attempts, exc)
            if attempt < attempts:
                time.sleep(random.uniform(0.005, 0.02) * attempt)
    raise Unavailable("The stock rows are busy with other orders; try again shortly.", code="stock_busy")


def _lock_stocks(product_ids: Iterable[int]) -> dict[int, Stock]:
    """Lock the stock rows of ``product_ids`` in ascending id order (the one order every writer uses)."""
    stocks = Stock.objects.select_for_update().filter(product_id__in=sorted(product_ids)).order_by("product_id")
    return {stock.product_id: stock for stock in stocks}


def _shift(
    *, quantities: dict[int, int], source: str, target: str | None, now: datetime, or_short: bool = False
) -> bool:
    """Move ``quantities[product_id]`` units from counter ``source`` to ``target``, in one UPDATE.

    The UPDATE only touches rows whose ``source`` holds enough. Every row must be
    touched: else, with ``or_short``, False (some row had not enough; the caller
    rolls the transaction back); without, a RuntimeError (the rows were locked or
    the counter is known to hold enough, so it is a bug) that rolls it back rather
    than leave it half done.
    """

    def shifted(field: str, sign: int) -> Case:
        whens = [When(product_id=pid, then=F(field) + sign * qty) for pid, qty in quantities.items()]
        return Case(*whens, default=F(field), output_field=PositiveIntegerField())

    enough = Q()
    for pid, qty in quantities.items():
        enough |= Q(product_id=pid, **{f"{source}__gte": qty})
    changes = {source: shifted(source, -1), "updated_at": now}
    if target:
        changes[target] = shifted(target, +1)
    updated = Stock.objects.filter(enough).update(**changes)
    if updated == len(quantities):
        return True
    if or_short:
        return False
    raise RuntimeError(f"stock changed under lock: {updated} of {len(quantities)} rows had enough {source}")


def _record(*, kind: str, quantities: dict[int, int], reservation: Reservation | None = None, note: str = "") -> None:
    StockMovement.objects.bulk_create(
        StockMovement(product_id=pid, kind=kind, quantity=qty, reservation=reservation, note=note)
        for pid, qty in sorted(quantities.items())
    )


# --- products -----------------------------------------------------------------------


def _sku_exists(sku: str) -> InvalidRequest:
    # A 400 on the sku field, like any other invalid input: the client has to pick another sku.
    return InvalidRequest(
        f"Invalid input. sku: a product with sku {sku} already exists.",
        fields={"sku": ["A product with this sku already exists; skus are unique and never reused."]},
    )


def product_create(
    *,
    sku: str,
    name: str,
    price_cents: int,
    description: str = "",
    currency: str = "EUR",
    active: bool = True,
    initial_stock: int = 0,
) -> Product:
    """Create a product with its stock row and, when ``initial_stock`` > 0, an INITIAL movement."""

    def create() -> Product:
        if Product.objects.filter(sku=sku).exists():
            raise _sku_exists(sku)
        product = Product.objects.create(
            sku=sku, name=name, description=description, price_cents=price_cents, currency=currency, active=active
        )
        product.stock = Stock.objects.create(product=product, available=initial_stock, initial=initial_stock)
        if initial_stock:
            _record(kind=Kind.INITIAL, quantities={product.pk: initial_stock}, note="initial stock")
        return product

    try:
        return run_in_transaction(create)
    except IntegrityError:
        # Two creations of the same sku raced; the loser gets the same answer as if it came second.
        if Product.objects.filter(sku=sku).exists():
            raise _sku_exists(sku) from None
        raise


def product_update(
    *,
    product: Product,
    name: str | None = None,
    description: str | None = None,
    price_cents: int | None = None,
    active: bool | None = None,
) -> Product:
    """Change the given attributes (``None`` leaves one unchanged). The sku and currency never change.

    Reservations keep the price they were made at.
    """
    wanted = {"name": name, "description": description, "price_cents": price_cents, "active": active}
    changed = [field for field, value in wanted.items() if value is not None and getattr(product, field) != value]
    for field in changed:
        setattr(product, field, wanted[field])
    if changed:
        product.save(update_fields=[*changed, "updated_at"])
    return product


def product_restock(*, product: Product, quantity: int, note: str = "", now: datetime | None = None) -> Product:
    """Add ``quantity`` units to the available stock and record a RESTOCK movement."""
    now = now or timezone.now()

    def restock() -> Stock:
        stock = _lock_stocks([product.pk])[product.pk]
        if stock.initial + stock.restocked + quantity > STOCK_COUNTER_MAX:
            raise Conflict(
                f"{product.sku} cannot hold more than {STOCK_COUNTER_MAX} units in total.",
                code="stock_limit",
                fields={"quantity": [f"At most {STOCK_COUNTER_MAX - stock.initial - stock.restocked} more units."]},
            )
        Stock.objects.filter(pk=product.pk).update(
            available=F("available") + quantity, restocked=F("restocked") + quantity, updated_at=now
        )
        _record(kind=Kind.RESTOCK, quantities={product.pk: quantity}, note=note or "restock")
        stock.available += quantity
        stock.restocked += quantity
        stock.updated_at = now
        return stock

    product.stock = run_in_transaction(restock)
    return product


# --- reservations ---------------------------------------------------------------------


def _merged(lines: Iterable[dict]) -> dict[str, int]:
    """Quantities by sku, sorted by sku; a sku sent on several lines is one line with their sum."""
    merged: dict[str, int] = {}
    for line in lines:
        merged[line["sku"]] = merged.get(line["sku"], 0) + line["quantity"]
    return dict(sorted(merged.items()))


def _unknown_skus(skus: list[str]) -> InvalidRequest:
    return InvalidRequest(
        f"Unknown or inactive sku: {', '.join(skus)}.",
        code="unknown_sku",
        fields={"lines": [f"{sku}: no active product has this sku." for sku in skus]},
        skus=skus,
    )


class _Short(Exception):
    """Not every line had enough stock: the transaction is rolled back, then the shortage answered."""


def _insufficient(shortages: list[dict]) -> Conflict:
    return Conflict(
        f"Not enough stock for {', '.join(s['sku'] for s in shortages)}; nothing was reserved.",
        code="insufficient_stock",
        fields={"lines": [f"{s['sku']}: {s['requested']} requested, {s['available']} available." for s in shortages]},
        shortages=shortages,
    )


def reservation_create(
    *,
    order_id: str,
    idempotency_key: str,
    lines: list[dict],
    ttl_seconds: int = RESERVATION_TTL_DEFAULT,
    now: datetime | None = None,
) -> tuple[Reservation, bool]:
    """Hold stock for every line ``{sku, quantity}``, all or nothing. Returns ``(reservation, created)``.

    The same ``idempotency_key`` with the same order and lines returns the
    first reservation as it is now (``created`` False); with anything else, a
    409 ``idempotency_conflict``. Lines naming the same sku are merged.
    Unknown or inactive skus → 400 ``unknown_sku``; not enough stock for any
    line → 409 ``insufficient_stock`` and nothing changes.
    """
    now = now or timezone.now()
    wanted = _merged(lines)
    request_fingerprint = fingerprint({"order_id": order_id, "lines": wanted})

    once = IdempotentCreate(
        lookup=lambda: Reservation.objects.filter(idempotency_key=idempotency_key).first(),
        request_fingerprint=request_fingerprint,
        conflict_message="This idempotency key was already used for a different reservation (other order or lines).",
        conflict_extra=lambda reservation: {"reservation_id": str(reservation.pk)},
    )

    def reserve() -> Reservation:
        # Written first: a replay is refused here by the unique key, before it touches any stock.
        reservation = Reservation.objects.create(
            order_id=order_id,
            idempotency_key=idempotency_key,
            request_fingerprint=request_fingerprint,
            status=Status.HELD,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
        products = {p.sku: p for p in Product.objects.filter(sku__in=wanted, active=True)}
        unknown = [sku for sku in wanted if sku not in products]
        if unknown:
            raise _unknown_skus(unknown)
        currencies = sorted({p.currency for p in products.values()})
        if len(currencies) > 1:
            raise InvalidRequest(
                f"One reservation cannot mix currencies ({', '.join(currencies)}).",
                code="mixed_currency",
                fields={"lines": ["Reserve products priced in one currency at a time."]},
            )
        quantities = {products[sku].pk: qty for sku, qty in wanted.items()}
        # The UPDATE takes the units and the row locks at once; a row it could not change had too few.
        if not _shift(quantities=quantities, source="available", target="reserved", now=now, or_short=True):
            raise _Short
        lines = ReservationLine.objects.bulk_create(
            ReservationLine(
                reservation=reservation,
                product=products[sku],
                quantity=qty,
                unit_price_cents=products[sku].price_cents,
                currency=products[sku].currency,
            )
            for sku, qty in wanted.items()
        )
        _record(kind=Kind.RESERVE, quantities=quantities, reservation=reservation, note=f"order {order_id}")
        return with_lines(reservation, lines)

    def reserve_or_short() -> Reservation:
        try:
            return run_in_transaction(reserve)
        except _Short:
            pass  # rolled back: nothing was taken
        # The same key may have won meanwhile: that is a replay, not a shortage.
        raced = once.replay()
        if raced is not None:
            return raced
        stocks = {
            stock.product.sku: stock
            for stock in Stock.objects.select_related("product").filter(product__sku__in=wanted)
        }
        shortages = [
            {"sku": sku, "requested": qty, "available": stocks[sku].available if sku in stocks else 0}
            for sku, qty in wanted.items()
            if sku not in stocks or stocks[sku].available < qty
        ] or [{"sku": sku, "requested": qty, "available": stocks[sku].available} for sku, qty in wanted.items()]
        raise _insufficient(shortages)

    # No lookup first: the reservation's row is the first write, and its unique key tells a replay.
    reservation, replayed = once.run(reserve_or_short, look_first=False)
    # A new reservation is answered as written (its lines and products are at hand); a replay as it is now.
    return (reservation_get(reservation_id=reservation.pk) if replayed else reservation), not replayed


def with_lines(reservation: Reservation, lines: list[ReservationLine]) -> Reservation:
    """``reservation`` answering ``reservation.lines.all()`` with ``lines`` (each with its product), by sku, unread."""
    lines = sorted(lines, key=lambda line: line.product.sku)
    reservation._prefetched_objects_cache = {"lines": lines}  # noqa: SLF001 — what prefetch_related would put there
    return reservation


def _lock_reservation(reservation_id: uuid.UUID) -> Reservation:
    reservation = Reservation.objects.select_for_update().filter(pk=reservation_id).first()
    if reservation is None:
        raise NotFound(f"No reservation {reservation_id}.")
    return reservation


def _transition(*, reservation: Reservation, to: str, kind: str, source: str, target: str, now: datetime) -> None:
    """Move the reservation's quantities between stock counters and change its status (all locked)."""
    quantities = dict(reservation.lines.order_by("product_id").values_list("product_id", "quantity"))
    _lock_stocks(quantities)
    _shift(quantities=quantities, source=source, target=target, now=now)
    _record(kind=kind, quantities=quantities, reservation=reservation, note=f"order {reservation.order_id}")
    reservation.status = to
    reservation.save(update_fields=["status", "updated_at"])


def _commit_held(*, reservation_id: uuid.UUID, quantities: dict[int, int], now: datetime) -> bool:
    """HELD -> COMMITTED and its units reserved -> sold, in one multi-table UPDATE (MySQL/MariaDB); False if not HELD.

    The ORM writes one table per statement; this is the conditional UPDATE of the reservation
    (``WHERE status = 'HELD'``: it takes the row lock the sweeper and a release take, so exactly
    one of them wins) and the stock UPDATE of :func:`_shift` as one statement. The reservation's
    row is locked first (its primary key makes it the join's first table), then the stock rows
    in ascending product id order, as every other writer does. Its lines' units are reserved,
    so every stock row holds enough; one that does not is a bug, and rolls the whole back.
    """
    quote = connection.ops.quote_name
    reservations, stocks = quote(Reservation._meta.db_table), quote(Stock._meta.db_table)
    product_ids = sorted(quantities)
    quantity_of = "CASE s.{column} {whens} END".format(
        column=quote("product_id"), whens=" ".join(["WHEN %s THEN %s"] * len(product_ids))
    )
    quantity_params = [value for pid in product_ids for value in (pid, quantities[pid])]
    at = connection.ops.adapt_datetimefield_value(now)
    sql = (
        f"UPDATE {reservations} AS r, {stocks} AS s "
        f"SET r.{quote('status')} = %s, r.{quote('updated_at')} = %s, "
        f"s.{quote('reserved')} = s.{quote('reserved')} - {quantity_of}, "
        f"s.{quote('sold')} = s.{quote('sold')} + {quantity_of}, s.{quote('updated_at')} = %s "
        f"WHERE r.{quote('id')} = %s AND r.{quote('status')} = %s "
        f"AND s.{quote('product_id')} IN ({', '.join(['%s'] * len(product_ids))}) "
        f"AND s.{quote('reserved')} >= {quantity_of}"
    )
    params = [
        Status.COMMITTED,
        at,
        *quantity_params,
        *quantity_params,
        at,
        Reservation._meta.pk.get_db_prep_value(reservation_id, connection),
        Status.HELD,
        *product_ids,
        *quantity_params,
    ]
    return update_matched(
        sql,
        params,
        expected=1 + len(product_ids),
        mismatch=lambda matched: (
            f"stock changed under lock: {matched - 1} of {len(product_ids)} rows had enough reserved"
        ),
    )


def reservation_commit(*, reservation_id: uuid.UUID, now: datetime | None = None) -> Reservation:
    """HELD → COMMITTED: the reserved units are sold. Idempotent.

    RELEASED, RETURNED or EXPIRED → 409 ``reservation_not_held``. A HELD one
    past ``expires_at`` is committed if the sweeper has not expired it yet.
    """
    now = now or timezone.now()

    def commit() -> Reservation | None:
        if connection.vendor == "mysql":
            # The lines first (written once, with the reservation, they never change), then one
            # UPDATE of the reservation and its stock rows together (_commit_held).
            lines = list(
                ReservationLine.objects.select_related("reservation", "product").filter(reservation_id=reservation_id)
            )
            quantities = {line.product_id: line.quantity for line in lines}
            if not lines or not _commit_held(reservation_id=reservation_id, quantities=quantities, now=now):
                return None
            lines[0].reservation.status, lines[0].reservation.updated_at = Status.COMMITTED, now
        else:
            # One conditional UPDATE checks HELD and takes the reservation's row lock, the one the sweeper
            # takes too: exactly one of them wins. Its lines' units are reserved, so the stock UPDATE holds.
            if not Reservation.objects.filter(pk=reservation_id, status=Status.HELD).update(
                status=Status.COMMITTED, updated_at=now
            ):
                return None
            lines = list(
                ReservationLine.objects.select_related("reservation", "product").filter(reservation_id=reservation_id)
            )
            quantities = {line.product_id: line.quantity for line in lines}
            _shift(quantities=quantities, source="reserved", target="sold", now=now)
        reservation = lines[0].reservation
        _record(kind=Kind.COMMIT, quantities=quantities, reservation=reservation, note=f"order {reservation.order_id}")
        return with_lines(reservation, lines)

    reservation = run_in_transaction(commit)
    if reservation is not None:
        return reservation
    reservation = reservation_get(reservation_id=reservation_id)
    if reservation.status != Status.COMMITTED:
        raise Conflict(
            f"Reservation {reservation.pk} is {reservation.status}; only a HELD reservation can be committed.",
            code="reservation_not_held",
            status=reservation.status,
        )
    return reservation


def reservation_release(*, reservation_id: uuid.UUID, now: datetime | None = None) -> Reservation:
    """Give the units back to available stock. Idempotent.

    HELD → RELEASED (reserved → available), COMMITTED → RETURNED
    (sold → available); RELEASED, RETURNED and EXPIRED stay as they are.
    """
    now = now or timezone.now()

    def release() -> Reservation:
        reservation = _lock_reservation(reservation_id)
        if reservation.status == Status.HELD:
            _transition(
                reservation=reservation,
                to=Status.RELEASED,
                kind=Kind.RELEASE,
                source="reserved",
                target="available",
                now=now,
            )
        elif reservation.status == Status.COMMITTED:
            _transition(
                reservation=reservation,
                to=Status.RETURNED,
                kind=Kind.RETURN,
                source="sold",
                target="available",
                now=now,
            )
        return reservation

    run_in_transaction(release)
    return reservation_get(reservation_id=reservation_id)


def reservations_expire(*, now: datetime, limit: int | None = None) -> int:
    """Expire HELD reservations whose ``expires_at`` is past ``now``: their units go back to available.

    Each reservation is expired in its own short transaction, with EXPIRE
    movements. Returns how many were expired.
    """
    due = Reservation.objects.filter(status=Status.HELD, expires_at__lte=now).order_by("expires_at")
    ids = list(due.values_list("id", flat=True)[:limit] if limit else due.values_list("id", flat=True))

    def expire(reservation_id: uuid.UUID) -> bool:
        reservation = _lock_reservation(reservation_id)
        # Committed or released since the list was read: not ours to expire any more.
        if reservation.status != Status.HELD or reservation.expires_at > now:
            return False
        _transition(
            reservation=reservation, to=Status.EXPIRED, kind=Kind.EXPIRE, source="reserved", target="available", now=now
        )
        return True

    expired = 0
    for reservation_id in ids:
        try:
            expired += run_in_transaction(lambda rid=reservation_id: expire(rid))
        except NotFound:
            continue
    if expired:
        log.info("expired %d reservation(s) past their deadline", expired)
    return expired
