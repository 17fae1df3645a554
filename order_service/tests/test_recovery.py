"""The recovery job: sagas nobody runs any more (a killed request or worker, a lost task) are queued again."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders import background
from orders.models import Order, OrderStatus, SagaStep
from tests.conftest import make_order, notes, place

pytestmark = pytest.mark.django_db


def test_a_sync_request_killed_mid_saga_is_finished_by_the_worker(queued, fake_inventory, fake_payment):
    """Ensure an order left at 'reserved' by a dead request (its lease run out) is queued once, then confirmed."""
    order = make_order(saga_step=SagaStep.RESERVED, saga_lease_until=timezone.now() - timedelta(seconds=1))
    held = fake_inventory.reserve(
        order_id=order.pk, lines=[{"sku": "KB-001", "quantity": 1}], idempotency_key=f"order-{order.pk}-reserve"
    )
    Order.objects.filter(pk=order.pk).update(reservation_id=held.id)

    assert background.orders_recover_stalled() == 1
    assert background.orders_recover_stalled() == 0  # the queued task holds the lease now

    [(queued_id, runner)] = queued.sent
    order.refresh_from_db()
    assert queued_id == order.pk and order.saga_runner == runner
    assert order.saga_deadline == order.created_at + timedelta(seconds=120)
    assert notes(order.pk)[-1] == "recovered: nobody was running this saga (at step reserved)"
    queued.run()
    assert Order.objects.get(pk=order.pk).status == OrderStatus.CONFIRMED
    assert fake_inventory.reservation_of(order.pk).status == "COMMITTED"
    assert len(fake_inventory.calls_to("reserve")) == 1 and len(fake_payment.captured()) == 1


def test_a_lost_task_is_queued_again_once_its_lease_expires(alice, async_saga, queued):
    """Ensure an async order whose task vanished is left alone while the lease runs, then queued under a new id."""
    order_id = place(alice).data["id"]
    [(_, lost_runner)] = queued.sent
    queued.sent.clear()

    assert background.orders_recover_stalled() == 0
    Order.objects.filter(pk=order_id).update(saga_lease_until=timezone.now() - timedelta(seconds=1))
    assert background.orders_recover_stalled() == 1

    [(_, runner)] = queued.sent
    assert runner != lost_runner
    # Should the lost task turn up after all, it finds someone else's live lease and leaves.
    assert background.order_saga_work(order_id=order_id, runner=lost_runner) is None
    queued.run()
    assert Order.objects.get(pk=order_id).status == OrderStatus.CONFIRMED


def test_a_paused_cancellation_is_finished_in_the_background(alice, queued, fake_inventory, fake_payment):
    """Ensure a cancel that stopped for an outage (503) is completed by recovery once the peer is back."""
    order_id = place(alice).data["id"]
    fake_payment.fail("refund")
    assert alice.post(f"/api/orders/{order_id}/cancel/").status_code == 503

    assert background.orders_recover_stalled() == 1
    queued.run()

    order = Order.objects.get(pk=order_id)
    assert order.status == OrderStatus.CANCELLED and order.status_reason == "Cancelled by customer"
    assert fake_payment.captured()[0].status == "REFUNDED"
    assert fake_inventory.reservation_of(order_id).status == "RETURNED"


def test_recovery_leaves_drafts_finished_and_running_sagas_alone(alice, queued):
    """Ensure drafts, ended orders and orders with a live lease are never queued."""
    make_order(saga_step=SagaStep.NONE)
    make_order(status=OrderStatus.CONFIRMED, saga_step=SagaStep.DONE)
    make_order(status=OrderStatus.CANCELLED, saga_step=SagaStep.DONE)
    make_order(saga_step=SagaStep.CHARGING, saga_lease_until=timezone.now() + timedelta(seconds=30))

    assert background.orders_recover_stalled() == 0
    assert queued.sent == []


def test_recovery_is_bounded_per_run(queued):
    """Ensure one run queues at most `limit` sagas, oldest first; the next run takes the rest."""
    orders = [make_order(saga_step=SagaStep.RESERVING) for _ in range(5)]

    assert background.orders_recover_stalled(limit=3) == 3
    assert background.orders_recover_stalled(limit=3) == 2
    assert sorted(order_id for order_id, _ in queued.sent) == sorted(o.pk for o in orders)


class _Killed(BaseException):
    """The process dying where it stands: no handler of the saga's runs (as SIGKILL would leave it)."""


def test_a_sync_request_killed_while_committing_is_confirmed_by_the_worker_with_one_charge(
    alice, queued, fake_inventory, fake_payment, monkeypatch
):
    """Ensure a request killed after its charge was answered, before the commit's answer, leaves the order at
    'committing' with its charge recorded (so a cancel or the recovery job meanwhile knows the commit is in
    flight); the worker commits again (the same reservation, idempotent) and confirms: one charge."""
    from orders.clients import inventory

    commit = fake_inventory.commit

    def killed_after_committing(**kwargs):
        commit(**kwargs)
        raise _Killed

    monkeypatch.setattr(inventory, "inventory_commit", killed_after_committing)
    with pytest.raises(_Killed):
        place(alice)
    monkeypatch.setattr(inventory, "inventory_commit", commit)

    order = Order.objects.get()
    [charge] = fake_payment.captured()
    assert (order.status, order.saga_step, order.charge_id, order.charge_outcome_unknown) == (
        OrderStatus.PENDING,
        SagaStep.COMMITTING,
        charge.id,
        False,
    )
    assert notes(order.pk).count("payment captured") == 1
    # The dead request's lease runs out; the recovery job hands the saga to the worker.
    Order.objects.filter(pk=order.pk).update(saga_lease_until=timezone.now() - timedelta(seconds=1))
    assert background.orders_recover_stalled() == 1
    queued.run()

    order.refresh_from_db()
    assert (order.status, order.saga_step) == (OrderStatus.CONFIRMED, SagaStep.DONE)
    assert fake_payment.captured() == [charge] and len(fake_payment.calls_to("charge")) == 1
    assert fake_inventory.reservation_of(order.pk).status == "COMMITTED"
    assert notes(order.pk).count("payment captured") == 1 and notes(order.pk)[-1] == "confirmed", notes(order.pk)
