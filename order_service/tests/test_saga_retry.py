"""The worker's patience: capped exponential backoff while a peer is down, then giving up at the deadline."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from chassis.client import PeerUnavailable
from orders import background
from orders.models import Order, OrderStatus, SagaStep
from orders.saga import leases
from tests.conftest import notes, place

pytestmark = pytest.mark.django_db

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now=None):
        self.now = now or datetime.now(UTC)

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(leases, "clock", fake)
    return fake


@pytest.fixture(autouse=True)
def seeded(monkeypatch):
    monkeypatch.setattr(background, "rng", random.Random(7))


# --- the backoff, as a pure function -----------------------------------------------------------


def test_backoff_doubles_from_the_base_up_to_the_cap_with_half_jitter(settings):
    """Ensure attempt n waits between half and all of min(cap, base * 2**n)."""
    settings.ORDER_SAGA_RETRY_BACKOFF_SECONDS = 1.0
    settings.ORDER_SAGA_RETRY_BACKOFF_MAX_SECONDS = 30.0
    far = T0 + timedelta(hours=1)

    for attempt, full in [(0, 1), (1, 2), (2, 4), (3, 8), (4, 16), (5, 30), (9, 30), (500, 30)]:
        waits = [
            background.retry_countdown(attempt=attempt, now=T0, deadline=far, compensating=False) for _ in range(50)
        ]
        assert all(full / 2 <= wait <= full for wait in waits), (attempt, waits)
        assert len(set(waits)) > 1  # jittered: stalled sagas do not all come back together


def test_backoff_never_waits_past_the_deadline_and_gives_up_after_it():
    """Ensure the last wait ends at the deadline, and at or after the deadline the answer is None (give up)."""
    deadline = T0 + timedelta(seconds=120)

    assert background.retry_countdown(
        attempt=10, now=deadline - timedelta(seconds=3), deadline=deadline, compensating=False
    ) == pytest.approx(3.0)
    assert background.retry_countdown(attempt=0, now=deadline, deadline=deadline, compensating=False) is None
    assert (
        background.retry_countdown(
            attempt=0, now=deadline + timedelta(seconds=1), deadline=deadline, compensating=False
        )
        is None
    )


def test_a_compensation_never_gives_up():
    """Ensure a compensation keeps waiting (capped) whatever the deadline says."""
    wait = background.retry_countdown(attempt=50, now=T0 + timedelta(days=1), deadline=T0, compensating=True)

    assert 15 <= wait <= 30


# --- the worker with a peer down ----------------------------------------------------------------


def test_payment_down_keeps_the_order_pending_and_retries_until_it_is_back(
    alice, async_saga, queued, clock, fake_inventory, fake_payment
):
    """Ensure a payment outage shorter than the deadline ends CONFIRMED after a few waits, charging once."""
    order_id = place(alice).data["id"]
    [(_, runner)] = queued.sent
    fake_payment.fail("charge", times=3)
    fake_payment.fail("charges_for_order", times=3)

    waits = []
    for attempt in range(10):
        wait = background.order_saga_work(order_id=order_id, runner=runner, attempt=attempt)
        if wait is None:
            break
        order = Order.objects.get(pk=order_id)
        assert (order.status, order.saga_step) == (OrderStatus.PENDING, SagaStep.CHARGING)
        # The waiting task keeps the lease, so the recovery job leaves the order alone.
        assert order.saga_lease_until >= clock() + timedelta(seconds=wait)
        assert background.orders_recover_stalled() == 0
        waits.append(wait)
        clock.advance(wait)

    assert len(waits) == 3
    assert waits[0] <= 1 and 1 <= waits[1] <= 2 and 2 <= waits[2] <= 4
    order = Order.objects.get(pk=order_id)
    assert order.status == OrderStatus.CONFIRMED and order.saga_lease_until is None
    assert len(fake_payment.captured()) == 1
    # One "waiting" entry for the whole outage, not one per attempt.
    assert [n for n in notes(order_id) if n.startswith("waiting")] == [
        "waiting: payment unavailable (injected: charges_for_order unreachable); the worker retries with backoff"
    ]


def test_past_the_deadline_the_saga_gives_up_and_compensates(
    alice, async_saga, queued, clock, fake_inventory, fake_payment
):
    """Ensure payment still down at the deadline ends CANCELLED with the reason, the stock released, nothing charged."""
    order_id = place(alice).data["id"]
    [(_, runner)] = queued.sent
    fake_payment.fail("charge", times=100)
    fake_payment.fail("charges_for_order", times=2)  # ...but the compensation's settlement gets an answer

    wait = background.order_saga_work(order_id=order_id, runner=runner, attempt=0)
    assert wait is not None
    clock.advance(121)
    assert background.order_saga_work(order_id=order_id, runner=runner, attempt=1) is None

    order = Order.objects.get(pk=order_id)
    assert order.status == OrderStatus.CANCELLED
    assert order.status_reason == "Gave up after 120 s: payment unavailable"
    assert order.status_reason_code == "gave_up"
    assert fake_inventory.reservation_of(order_id).status == "RELEASED"
    assert fake_inventory.products["KB-001"].available == 10
    assert fake_payment.captured() == []
    assert notes(order_id)[-4:] == [
        "compensating: Gave up after 120 s: payment unavailable",
        f"nothing was charged under order-{order_id}-charge; payment will refuse a charge arriving late",
        "stock released",
        "cancelled: Gave up after 120 s: payment unavailable",
    ]


def test_giving_up_refunds_a_capture_whose_answer_was_lost(alice, async_saga, queued, clock, fake_payment):
    """Ensure a charge captured with its answer lost, then payment down till the deadline, is found and refunded."""
    order_id = place(alice).data["id"]
    [(_, runner)] = queued.sent
    fake_payment.fail("charge", after=True)  # captured, answer lost
    fake_payment.fail("charge", times=100)
    fake_payment.fail("charges_for_order", times=2)

    background.order_saga_work(order_id=order_id, runner=runner, attempt=0)
    clock.advance(200)
    assert background.order_saga_work(order_id=order_id, runner=runner, attempt=1) is None

    order = Order.objects.get(pk=order_id)
    assert order.status == OrderStatus.CANCELLED
    [charge] = fake_payment.captured()
    assert charge.status == "REFUNDED" and charge.refunds[0].amount_cents == order.total_cents
    assert "a capture made after its answer was lost was refunded (203.00 EUR)" in notes(order_id)


def test_a_compensation_waits_for_inventory_instead_of_cancelling_with_stock_held(
    alice, async_saga, queued, clock, fake_inventory, fake_payment
):
    """Ensure giving up while inventory is down stays PENDING/compensating (retrying) until the stock is released."""
    order_id = place(alice).data["id"]
    [(_, runner)] = queued.sent
    fake_inventory.fail("commit", times=100)
    fake_inventory.fail("release", times=3)

    background.order_saga_work(order_id=order_id, runner=runner, attempt=0)
    clock.advance(121)
    waits = [background.order_saga_work(order_id=order_id, runner=runner, attempt=1)]
    order = Order.objects.get(pk=order_id)
    assert (order.status, order.saga_step) == (OrderStatus.PENDING, SagaStep.COMPENSATING)
    assert fake_payment.captured()[0].status == "REFUNDED"  # what could be undone is undone already
    for attempt in range(2, 10):
        clock.advance(waits[-1])
        wait = background.order_saga_work(order_id=order_id, runner=runner, attempt=attempt)
        if wait is None:
            break
        waits.append(wait)

    assert all(w is not None for w in waits) and len(waits) == 3
    order = Order.objects.get(pk=order_id)
    assert order.status == OrderStatus.CANCELLED
    assert order.status_reason == "Gave up after 120 s: inventory unavailable"
    assert fake_inventory.reservation_of(order_id).status == "RELEASED"


def test_an_inventory_outage_at_reserve_releases_a_hold_made_with_its_answer_lost(
    alice, async_saga, queued, clock, fake_inventory, fake_payment
):
    """Ensure giving up at reserving looks the order's reservations up and releases the hold a lost answer made."""
    order_id = place(alice).data["id"]
    [(_, runner)] = queued.sent
    fake_inventory.fail("reserve", after=True)  # reserved, answer lost
    fake_inventory.fail("reserve", times=100)

    background.order_saga_work(order_id=order_id, runner=runner, attempt=0)
    assert Order.objects.get(pk=order_id).reservation_outcome_unknown is True
    clock.advance(121)
    assert background.order_saga_work(order_id=order_id, runner=runner, attempt=1) is None

    order = Order.objects.get(pk=order_id)
    assert order.status == OrderStatus.CANCELLED
    assert order.status_reason == "Gave up after 120 s: inventory unavailable"
    assert fake_inventory.reservation_of(order_id).status == "RELEASED"
    assert fake_inventory.products["KB-001"].available == 10
    assert fake_payment.calls == []


def test_breaker_open_is_retried_like_any_outage(alice, async_saga, queued, clock, monkeypatch, fake_payment):
    """Ensure a call our breaker refuses (nothing sent) is waited for too, not turned into a cancellation."""
    from orders.clients import payment

    order_id = place(alice).data["id"]
    [(_, runner)] = queued.sent
    real_charge, refused = payment.payment_charge, {"left": 2}

    def breaker(**kwargs):
        if refused["left"]:
            refused["left"] -= 1
            raise PeerUnavailable("payment", "circuit open: failing fast", rejected=True, attempts=0)
        return real_charge(**kwargs)

    monkeypatch.setattr(payment, "payment_charge", breaker)
    monkeypatch.setattr(payment, "payment_charges_for_order", lambda **kw: [])

    for attempt in range(5):
        wait = background.order_saga_work(order_id=order_id, runner=runner, attempt=attempt)
        if wait is None:
            break
        clock.advance(wait)

    assert Order.objects.get(pk=order_id).status == OrderStatus.CONFIRMED
    assert attempt == 2
