"""Fixtures of the order service's tests: customers with real signed tokens, and fake peers.

The fakes replace the functions of ``orders.clients.inventory`` and
``orders.clients.payment`` (the only place order_service talks to its peers)
with in-memory services that behave as docs/contracts.md says: stock that
moves between available, reserved and sold; reservations HELD, COMMITTED,
RELEASED, RETURNED; charges CAPTURED or DECLINED; refunds; settlements by
charge key (what the key captured is refunded, or the key is voided and a
charge with it refused); and idempotency keys that replay the first answer. ``fail(...)`` makes the next calls of one
operation raise ``PeerUnavailable``, before acting (nothing happened) or after
(it happened and the answer was lost).

Tests marked ``real_clients`` keep the real client functions (they talk HTTP
to a tiny server of their own).
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, field

import pytest
from rest_framework.test import APIClient

from chassis.client import PeerUnavailable
from chassis.lab import store
from chassis.testing import bearer, service_token, user_token
from orders import lab, tasks
from orders.clients import PeerRefused, inventory, payment
from orders.clients.inventory import InsufficientStock, LinesRefused, Product, Reservation, ReservationLine, Shortage
from orders.clients.payment import CardDeclined, Charge, Refund, Settlement
from orders.models import Order, OrderEvent, OrderLine, OrderStatus, SagaStep

ALICE, BOB, ADMIN = 1001, 1002, 1900

CATALOG = {
    # sku: (name, price_cents, initial stock, active)
    "KB-001": ("Mechanical keyboard", 8900, 10, True),
    "MS-002": ("Wireless mouse", 2500, 50, True),
    "MN-003": ("27-inch monitor", 19900, 2, True),
    "OLD-999": ("Discontinued cable", 500, 5, False),
}


class _Failures:
    """Scripted outages: ``fail("reserve", after=True)`` loses the answer of the next reserve."""

    def __init__(self, peer: str):
        self.peer = peer
        self.plan: dict[str, list[bool]] = {}

    def fail(self, operation: str, *, after: bool = False, times: int = 1) -> None:
        self.plan.setdefault(operation, []).extend([after] * times)

    def before(self, operation: str) -> bool:
        """Raise now if the next planned failure of ``operation`` comes before acting."""
        plan = self.plan.get(operation)
        if plan:
            after = plan.pop(0)
            if not after:
                raise PeerUnavailable(self.peer, f"injected: {operation} unreachable", status=503)
            return True
        return False

    def after(self, operation: str, lose_answer: bool) -> None:
        if lose_answer:
            raise PeerUnavailable(self.peer, f"injected: {operation} answer lost", status=None)


@dataclass
class FakeReservation:
    id: str
    order_id: int
    status: str
    lines: list[tuple[str, str, int, int]]  # sku, name, quantity, unit price

    def as_result(self) -> Reservation:
        lines = tuple(ReservationLine(sku, name, quantity, price) for sku, name, quantity, price in self.lines)
        return Reservation(self.id, self.status, lines, sum(q * p for _, _, q, p in self.lines), "EUR")


@dataclass
class FakeProduct:
    name: str
    price_cents: int
    available: int
    active: bool
    reserved: int = 0
    sold: int = 0


class FakeInventory:
    """inventory_service per the contract, in memory."""

    def __init__(self):
        self.lock = threading.RLock()
        self.failures = _Failures("inventory")
        self.products = {sku: FakeProduct(n, p, s, a) for sku, (n, p, s, a) in CATALOG.items()}
        self.reservations: dict[str, FakeReservation] = {}
        self.by_key: dict[str, str] = {}
        self.calls: list[tuple[str, object]] = []
        self.on_lookup = None  # a hook tests use to line threads up
        self._ids = itertools.count(1)

    def fail(self, operation: str, *, after: bool = False, times: int = 1) -> None:
        self.failures.fail(operation, after=after, times=times)

    def calls_to(self, operation: str) -> list:
        return [args for name, args in self.calls if name == operation]

    def products_lookup(self, *, skus):
        if self.on_lookup:
            self.on_lookup()
        with self.lock:
            self.calls.append(("lookup", tuple(skus)))
            self.failures.before("lookup")
            return {
                sku: Product(sku, p.name, p.price_cents, "EUR", p.active, p.available)
                for sku, p in self.products.items()
                if sku in skus
            }

    def reserve(self, *, order_id, lines, idempotency_key, ttl_seconds=None):
        with self.lock:
            self.calls.append(
                ("reserve", (order_id, tuple((line["sku"], line["quantity"]) for line in lines), idempotency_key))
            )
            lose = self.failures.before("reserve")
            if idempotency_key in self.by_key:
                result = self.reservations[self.by_key[idempotency_key]].as_result()
            else:
                unknown = [
                    line["sku"]
                    for line in lines
                    if line["sku"] not in self.products or not self.products[line["sku"]].active
                ]
                if unknown:
                    refused = PeerRefused("inventory", 400, "unknown_sku", f"Unknown or inactive sku: {unknown}.")
                    raise LinesRefused(refused, [f"Unknown or inactive sku: {sku}." for sku in unknown])
                shortages = [
                    Shortage(line["sku"], self.products[line["sku"]].available)
                    for line in lines
                    if self.products[line["sku"]].available < line["quantity"]
                ]
                if shortages:
                    raise InsufficientStock(shortages)
                reservation = FakeReservation(
                    id=f"res-{next(self._ids)}",
                    order_id=order_id,
                    status="HELD",
                    lines=[
                        (
                            line["sku"],
                            self.products[line["sku"]].name,
                            line["quantity"],
                            self.products[line["sku"]].price_cents,
                        )
                        for line in lines
                    ],
                )
                for sku, _, quantity, _ in reservation.lines:
                    self.products[sku].available -= quantity
                    self.products[sku].reserved += quantity
                self.reservations[reservation.id] = reservation
                self.by_key[idempotency_key] = reservation.id
                result = reservation.as_result()
            self.failures.after("reserve", lose)
            return result

    def commit(self, *, reservation_id):
        with self.lock:
            self.calls.append(("commit", reservation_id))
            lose = self.failures.before("commit")
            reservation = self.reservations[reservation_id]
            if reservation.status == "HELD":
                for sku, _, quantity, _ in reservation.lines:
                    self.products[sku].reserved -= quantity
                    self.products[sku].sold += quantity
                reservation.status = "COMMITTED"
            elif reservation.status != "COMMITTED":
                raise PeerRefused("inventory", 409, "reservation_not_held", f"The reservation is {reservation.status}.")
            self.failures.after("commit", lose)
            return reservation.as_result()

    def release(self, *, reservation_id):
        with self.lock:
            self.calls.append(("release", reservation_id))
            lose = self.failures.before("release")
            reservation = self.reservations[reservation_id]
            if reservation.status == "HELD":
                for sku, _, quantity, _ in reservation.lines:
                    self.products[sku].reserved -= quantity
                    self.products[sku].available += quantity
                reservation.status = "RELEASED"
            elif reservation.status == "COMMITTED":
                for sku, _, quantity, _ in reservation.lines:
                    self.products[sku].sold -= quantity
                    self.products[sku].available += quantity
                reservation.status = "RETURNED"
            self.failures.after("release", lose)
            return reservation.as_result()

    def reservations_for_order(self, *, order_id):
        with self.lock:
            self.calls.append(("reservations_for_order", order_id))
            self.failures.before("reservations_for_order")
            return [r.as_result() for r in self.reservations.values() if r.order_id == order_id]

    def expire(self):
        with self.lock:
            self.calls.append(("expire", None))
            self.failures.before("expire")
            return 0

    def reservation_of(self, order_id: int) -> FakeReservation | None:
        return next((r for r in self.reservations.values() if r.order_id == order_id), None)


@dataclass
class FakeCharge:
    id: str
    order_id: int
    amount_cents: int
    status: str
    refunds: list = field(default_factory=list)


class FakePayment:
    """payment_service per the contract, in memory. ``pm_declined`` and ``pm_nofunds`` are refused."""

    DECLINES = {"pm_declined": "card_declined", "pm_nofunds": "insufficient_funds"}

    def __init__(self):
        self.lock = threading.RLock()
        self.failures = _Failures("payment")
        self.charges: dict[str, FakeCharge] = {}
        self.answers: dict[str, tuple[tuple, object]] = {}  # key → (body, charge or CardDeclined)
        self.refund_answers: dict[str, tuple[tuple, Refund]] = {}
        self.settlements: dict[str, Settlement] = {}  # charge key → the first settlement
        self.calls: list[tuple[str, object]] = []
        self.on_refund = None  # a hook tests use to hold a refund in flight
        self._ids = itertools.count(1)

    def fail(self, operation: str, *, after: bool = False, times: int = 1) -> None:
        self.failures.fail(operation, after=after, times=times)

    def calls_to(self, operation: str) -> list:
        return [args for name, args in self.calls if name == operation]

    def captured(self) -> list[FakeCharge]:
        return [c for c in self.charges.values() if c.status in ("CAPTURED", "REFUNDED")]

    def charge(self, *, order_id, customer_id, payment_method, amount_cents, currency, idempotency_key):
        body = (order_id, customer_id, payment_method, amount_cents, currency)
        with self.lock:
            self.calls.append(("charge", body + (idempotency_key,)))
            lose = self.failures.before("charge")
            voided = self.settlements.get(idempotency_key)
            if voided is not None and voided.outcome == "VOIDED":
                raise PeerRefused("payment", 409, "charge_voided", "This key was settled before the charge arrived.")
            if idempotency_key in self.answers:
                first_body, answer = self.answers[idempotency_key]
                if first_body != body:
                    raise PeerRefused("payment", 409, "idempotency_conflict", "Key reused with another body.")
            else:
                status = "DECLINED" if payment_method in self.DECLINES else "CAPTURED"
                charge = FakeCharge(f"ch-{next(self._ids)}", order_id, amount_cents, status)
                self.charges[charge.id] = charge
                answer = CardDeclined(self.DECLINES[payment_method]) if status == "DECLINED" else charge
                self.answers[idempotency_key] = (body, answer)
            self.failures.after("charge", lose)
            if isinstance(answer, CardDeclined):
                raise answer
            return Charge(answer.id, "CAPTURED", answer.amount_cents)

    def charges_for_order(self, *, order_id):
        with self.lock:
            self.calls.append(("charges_for_order", order_id))
            self.failures.before("charges_for_order")
            return [Charge(c.id, c.status, c.amount_cents) for c in self.charges.values() if c.order_id == order_id]

    def refund(self, *, charge_id, amount_cents, reason, idempotency_key):
        if self.on_refund:
            self.on_refund()
        body = (charge_id, amount_cents, reason)
        with self.lock:
            self.calls.append(("refund", body + (idempotency_key,)))
            lose = self.failures.before("refund")
            if idempotency_key in self.refund_answers:
                first_body, refund = self.refund_answers[idempotency_key]
                if first_body != body:
                    raise PeerRefused("payment", 409, "idempotency_conflict", "Key reused with another body.")
            else:
                charge = self.charges[charge_id]
                if charge.status != "CAPTURED":
                    raise PeerRefused("payment", 409, "not_refundable", f"The charge is {charge.status}.")
                refund = Refund(f"rf-{next(self._ids)}", amount_cents)
                charge.refunds.append(refund)
                charge.status = "REFUNDED"
                self.refund_answers[idempotency_key] = (body, refund)
            self.failures.after("refund", lose)
            return refund

    def settle(self, *, order_id, charge_key, reason, idempotency_key):
        """Refund what ``charge_key`` captured, or void the key (a charge with it is refused from now on)."""
        with self.lock:
            self.calls.append(("settle", (order_id, charge_key, idempotency_key)))
            lose = self.failures.before("settle")
            if charge_key not in self.settlements:
                _, answer = self.answers.get(charge_key, (None, None))
                if answer is None:
                    settlement = Settlement("VOIDED", "", "", 0)
                elif isinstance(answer, CardDeclined):
                    settlement = Settlement("NOT_CAPTURED", "", "", 0)
                elif answer.status == "REFUNDED":
                    settlement = Settlement("ALREADY_REFUNDED", answer.id, "", 0)
                else:
                    refund = Refund(f"rf-{next(self._ids)}", answer.amount_cents)
                    answer.refunds.append(refund)
                    answer.status = "REFUNDED"
                    settlement = Settlement("REFUNDED", answer.id, refund.id, refund.amount_cents)
                self.settlements[charge_key] = settlement
            self.failures.after("settle", lose)
            return self.settlements[charge_key]


@pytest.fixture
def fake_inventory():
    return FakeInventory()


@pytest.fixture
def fake_payment():
    return FakePayment()


@pytest.fixture(autouse=True)
def fake_peers(request, monkeypatch, settings, fake_inventory, fake_payment):
    """Every test talks to the fake peers, except those marked ``real_clients``.

    The peers' URLs point at a closed port meanwhile, so a client function the
    fakes forgot fails loudly instead of reaching a running lab.
    """
    if request.node.get_closest_marker("real_clients"):
        return
    settings.CHASSIS = {**settings.CHASSIS, "PEERS": dict.fromkeys(settings.CHASSIS["PEERS"], "http://127.0.0.1:9")}
    monkeypatch.setattr(inventory, "inventory_products_lookup", fake_inventory.products_lookup)
    monkeypatch.setattr(inventory, "inventory_reserve", fake_inventory.reserve)
    monkeypatch.setattr(inventory, "inventory_commit", fake_inventory.commit)
    monkeypatch.setattr(inventory, "inventory_release", fake_inventory.release)
    monkeypatch.setattr(inventory, "inventory_reservations_for_order", fake_inventory.reservations_for_order)
    monkeypatch.setattr(inventory, "inventory_reservations_expire", fake_inventory.expire)
    monkeypatch.setattr(payment, "payment_charge", fake_payment.charge)
    monkeypatch.setattr(payment, "payment_charges_for_order", fake_payment.charges_for_order)
    monkeypatch.setattr(payment, "payment_refund", fake_payment.refund)
    monkeypatch.setattr(payment, "payment_settle", fake_payment.settle)


@pytest.fixture(autouse=True)
def own_lab_state(settings):
    """Each test starts with the default lab state (sync saga), in cache keys no other test run shares."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"lab:order:test-{os.getpid()}"}}
    store.forget_local()
    yield
    from django.core.cache import cache

    cache.delete(f"lab:{lab.STORE_KEY}")
    store.forget_local()


@pytest.fixture(autouse=True)
def own_breakers(settings):
    """Each test has breakers of its own (a Redis namespace no running lab shares), closed at the start.

    A checkout reads the breakers of its peers before its first step (fail fast): a lab's open
    breaker must not turn this suite's checkouts away.
    """
    from chassis.lab import resilience

    settings.CHASSIS = {**settings.CHASSIS, "REDIS_PREFIX": f"lab-order-test-{os.getpid()}"}
    resilience._breakers.clear()
    resilience._storages.clear()
    resilience.breakers_reset(["inventory", "payment"])
    yield
    resilience.breakers_reset(["inventory", "payment"])
    resilience._breakers.clear()
    resilience._storages.clear()


@pytest.fixture
def async_saga():
    """The lab's saga switch set to async (deadline 120 s)."""
    return lab.saga_settings_update(mode="async", deadline_seconds=120)


class Queued:
    """The saga tasks sent to the broker: ``(order_id, task id)``; ``run()`` plays the worker.

    A task is sent when the transaction that queued it commits (``transaction.on_commit``).
    The test's own transaction never commits, so reading ``sent`` (or ``run()``) first plays
    the commit of what the code under test has done so far: its on_commit callbacks run then.
    """

    def __init__(self, capture_on_commit):
        self._capture_on_commit = capture_on_commit
        self._capturing = None
        self._sent: list = []
        self.commit()

    def commit(self) -> None:
        """Run the on_commit callbacks registered since the last call, as the commit of their transactions would."""
        if self._capturing is not None:
            self._capturing.__exit__(None, None, None)
        self._capturing = self._capture_on_commit(execute=True)
        self._capturing.__enter__()

    def close(self) -> None:
        if self._capturing is not None:
            self._capturing.__exit__(None, None, None)
            self._capturing = None

    @property
    def sent(self) -> list:
        self.commit()
        return self._sent

    def record(self, order_id: int, task_id: str) -> None:
        self._sent.append((order_id, task_id))

    def run(self) -> list:
        """Run every task sent so far, once each, as the worker would; return their retry countdowns (or None)."""
        from orders import background

        pending, self._sent = self.sent, []
        return [background.order_saga_work(order_id=order_id, runner=runner) for order_id, runner in pending]


@pytest.fixture
def queued(monkeypatch, django_capture_on_commit_callbacks) -> Queued:
    """Catch the saga tasks instead of sending them (nothing is published)."""
    record = Queued(django_capture_on_commit_callbacks)

    def apply_async(args=None, task_id=None, **_options):
        record.record(args[0], task_id)

    monkeypatch.setattr(tasks.order_saga_task, "apply_async", apply_async)
    yield record
    record.close()


def client_for(user_id: int, *, staff: bool = False) -> APIClient:
    client = APIClient()
    client.credentials(**bearer(user_token(user_id=user_id, staff=staff)))
    return client


@pytest.fixture
def alice() -> APIClient:
    return client_for(ALICE)


@pytest.fixture
def bob() -> APIClient:
    return client_for(BOB)


@pytest.fixture
def admin() -> APIClient:
    return client_for(ADMIN, staff=True)


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


@pytest.fixture
def dashboard() -> APIClient:
    client = APIClient()
    client.credentials(**bearer(service_token(caller="dashboard", audience="order")))
    return client


_keys = itertools.count(1)


def new_key() -> str:
    return f"test-key-{next(_keys):06d}"


def order_body(**overrides) -> dict:
    body = {
        "lines": [{"sku": "KB-001", "quantity": 2}, {"sku": "MS-002", "quantity": 1}],
        "payment_method": "pm_visa_4242",
    }
    body.update(overrides)
    return body


def place(client: APIClient, body: dict | None = None, *, key: str | None = None):
    """POST /api/orders/ with a fresh (or the given) Idempotency-Key."""
    return client.post(
        "/api/orders/", body if body is not None else order_body(), format="json", HTTP_IDEMPOTENCY_KEY=key or new_key()
    )


def notes(order_id: int) -> list[str]:
    return list(OrderEvent.objects.filter(order_id=order_id).order_by("id").values_list("note", flat=True))


def make_order(
    *, customer_id: int = ALICE, status: str = OrderStatus.PENDING, saga_step: str = SagaStep.NONE, **fields
) -> Order:
    """An order written straight to the database (for states no endpoint reaches, like SHIPPED)."""
    order = Order.objects.create(
        customer_id=customer_id,
        status=status,
        saga_step=saga_step,
        idempotency_key=fields.pop("idempotency_key", new_key()),
        request_fingerprint="-",
        payment_method="pm_visa_4242",
        total_cents=8900,
        **fields,
    )
    OrderLine.objects.create(order=order, sku="KB-001", name="Mechanical keyboard", quantity=1, unit_price_cents=8900)
    OrderEvent.objects.create(order=order, status=status, step="received", note="order received")
    return order


@pytest.fixture(autouse=True)
def generous_write_rate(settings):
    """The suite writes far faster than any customer; the write limit has tests of its own (test_throttling.py)."""
    settings.CHASSIS = {**settings.CHASSIS, "WRITE_RATE_PER_USER": "100000/s"}
