"""The async saga: POST answers 202 at once, the worker's task runs the saga, replays and redeliveries are harmless."""

import pytest
from django.db import transaction
from django.utils import timezone

from orders import saga, tasks
from orders.models import Order, OrderStatus, SagaStep
from tests.conftest import notes, order_body, place

pytestmark = pytest.mark.django_db


def test_async_checkout_answers_202_pending_and_queues_one_task(
    alice, async_saga, queued, fake_inventory, fake_payment
):
    """Ensure POST answers 202 PENDING with a Location at once, nothing called yet, and one task queued."""
    response = place(alice)

    assert response.status_code == 202, response.data
    assert response.data["status"] == "PENDING"
    assert response.data["saga_step"] == "reserving"
    assert response["Location"].endswith(f"/api/orders/{response.data['id']}/")
    assert [e["step"] for e in response.data["history"]] == ["received", "queued"]
    assert fake_inventory.calls_to("reserve") == [] and fake_payment.calls == []
    order = Order.objects.get(pk=response.data["id"])
    assert queued.sent == [(order.pk, order.saga_runner)]
    # The queued task owns the saga meanwhile, and the worker retries until created_at + 120 s.
    assert order.saga_lease_until > timezone.now()
    assert order.saga_deadline == order.created_at + timezone.timedelta(seconds=120)


def test_the_worker_runs_the_queued_saga_to_confirmed(alice, async_saga, queued, fake_inventory, fake_payment):
    """Ensure the task confirms the order with the same steps and keys as the sync saga, and frees the lease."""
    order_id = place(alice).data["id"]

    assert queued.run() == [None]

    order = Order.objects.get(pk=order_id)
    assert (order.status, order.saga_step, order.saga_lease_until) == (OrderStatus.CONFIRMED, SagaStep.DONE, None)
    assert notes(order_id) == [
        "order received",
        "checkout queued for the worker (gives up after 120 s)",
        "stock reserved",
        "payment captured",
        "stock committed",
        "confirmed",
    ]
    assert fake_inventory.calls_to("reserve")[0][2] == f"order-{order_id}-reserve"
    assert len(fake_payment.captured()) == 1
    assert alice.get(f"/api/orders/{order_id}/").data["status"] == "CONFIRMED"


def test_a_replay_answers_200_with_the_same_order_and_runs_nothing(alice, async_saga, queued, fake_inventory):
    """Ensure the same key and body answer 200 with the first order, queue no second task, call no peer."""
    body = order_body()
    first = place(alice, body, key="async-replay-01")

    second = place(alice, body, key="async-replay-01")

    assert second.status_code == 200
    assert second["Idempotent-Replayed"] == "true"
    assert second.data["id"] == first.data["id"]
    assert len(queued.sent) == 1
    assert fake_inventory.calls_to("reserve") == []
    assert Order.objects.count() == 1


def test_a_replay_requeues_a_saga_nobody_runs_any_more(alice, async_saga, queued, fake_payment):
    """Ensure a replay of an order whose task was lost (lease expired) queues it again, under a new task id."""
    first = place(alice, order_body(), key="async-replay-02")
    lost_task = queued.sent.pop()
    Order.objects.filter(pk=first.data["id"]).update(saga_lease_until=None)

    second = place(alice, order_body(), key="async-replay-02")

    assert second.status_code == 200
    [(order_id, runner)] = queued.sent
    assert order_id == first.data["id"] and runner != lost_task[1]
    assert notes(order_id)[-1] == "queued again after a replay of the request (at step reserving)"
    queued.run()
    assert Order.objects.get(pk=order_id).status == OrderStatus.CONFIRMED
    assert len(fake_payment.captured()) == 1


def test_a_redelivered_task_finishes_its_saga_and_charges_once(alice, async_saga, queued, fake_payment):
    """Ensure a task delivered again after its worker died mid-saga (same id, its lease still running) resumes it."""
    order_id = place(alice).data["id"]
    [(_, runner)] = queued.sent
    fake_payment.fail("charge", after=True)  # the worker dies with the charge made and its answer lost...
    fake_payment.fail("charges_for_order")
    queued.run()
    order = Order.objects.get(pk=order_id)
    assert order.saga_step == SagaStep.CHARGING and order.saga_lease_until > timezone.now()

    from orders import background

    assert background.order_saga_work(order_id=order_id, runner=runner, attempt=1) is None  # ...and comes back

    assert Order.objects.get(pk=order_id).status == OrderStatus.CONFIRMED
    assert len(fake_payment.captured()) == 1
    assert len(fake_payment.calls_to("charge")) == 2  # the same key twice: one capture


def test_a_task_leaves_alone_a_saga_someone_else_runs(alice, async_saga, queued, fake_inventory):
    """Ensure a stray task (another id) does nothing while the lease of the saga's runner is alive."""
    order_id = place(alice).data["id"]

    from orders import background

    assert background.order_saga_work(order_id=order_id, runner="someone-else", attempt=0) is None

    assert fake_inventory.calls_to("reserve") == []
    assert Order.objects.get(pk=order_id).saga_step == SagaStep.RESERVING


def test_running_a_finished_saga_again_changes_nothing(alice, async_saga, queued, fake_inventory, fake_payment):
    """Ensure a task delivered twice after its saga ended calls no peer and writes nothing."""
    order_id = place(alice).data["id"]
    [(_, runner)] = queued.sent
    queued.run()
    calls, history = (len(fake_inventory.calls), len(fake_payment.calls)), notes(order_id)

    from orders import background

    assert background.order_saga_work(order_id=order_id, runner=runner, attempt=0) is None

    assert (len(fake_inventory.calls), len(fake_payment.calls)) == calls
    assert notes(order_id) == history


def test_async_mode_still_refuses_bad_input_before_writing(alice, async_saga, queued, fake_inventory):
    """Ensure unknown skus are a 400 and an unreachable inventory a 503 in async mode too, with nothing queued."""
    unknown = place(alice, order_body(lines=[{"sku": "NOPE-1", "quantity": 1}]))
    fake_inventory.fail("lookup")
    down = place(alice)

    assert unknown.status_code == 400 and down.status_code == 503
    assert Order.objects.count() == 0 and queued.sent == []


def test_a_draft_is_not_queued_and_its_checkout_follows_the_mode(alice, async_saga, queued, fake_payment):
    """Ensure a draft stays a draft (201), and its checkout in async mode answers 202 and is run by the worker."""
    draft = place(alice, order_body(checkout=False))
    assert draft.status_code == 201 and queued.sent == []

    response = alice.post(f"/api/orders/{draft.data['id']}/checkout/")

    assert response.status_code == 202
    assert response.data["status"] == "PENDING" and response.data["saga_step"] == "reserving"
    assert response["Location"].endswith(f"/api/orders/{draft.data['id']}/")
    assert [order_id for order_id, _ in queued.sent] == [draft.data["id"]]
    order = Order.objects.get(pk=draft.data["id"])
    assert order.saga_deadline > timezone.now() + timezone.timedelta(seconds=110)  # counted from the checkout
    queued.run()
    assert Order.objects.get(pk=draft.data["id"]).status == OrderStatus.CONFIRMED


def test_switching_back_to_sync_runs_the_next_checkout_in_the_request(alice, dashboard, queued):
    """Ensure the mode is read per request: async gives 202, sync again gives 201 CONFIRMED."""
    dashboard.put("/_lab/saga/", {"mode": "async"}, format="json")
    assert place(alice).status_code == 202
    dashboard.put("/_lab/saga/", {"mode": "sync"}, format="json")

    response = place(alice)

    assert response.status_code == 201 and response.data["status"] == "CONFIRMED"
    assert response["Location"].endswith(f"/api/orders/{response.data['id']}/")
    assert len(queued.sent) == 1


# Real commits: the task is sent when the request's transaction commits, before the answer is written.
@pytest.mark.django_db(transaction=True)
def test_an_unreachable_broker_keeps_the_order_for_the_recovery_job(alice, async_saga, monkeypatch):
    """Ensure a broker that refuses the task still answers 202, frees the lease and says so in the history."""

    def broker_down(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.order_saga_task, "apply_async", broker_down)

    response = place(alice)

    assert response.status_code == 202
    order = Order.objects.get(pk=response.data["id"])
    assert order.saga_lease_until is None  # the recovery job picks it up at its next run
    assert response.data["history"][-1]["step"] == "queue_failed"


def test_a_rolled_back_transaction_queues_no_task(alice, async_saga, queued):
    """Ensure the saga's task is sent only when the transaction that queued it commits, never when it rolls back."""
    order_id = place(alice).data["id"]
    queued.sent.clear()
    Order.objects.filter(pk=order_id).update(saga_lease_until=None)  # nobody runs it: it may be queued again

    with pytest.raises(RuntimeError), transaction.atomic():
        assert saga.order_saga_enqueue(order_id=order_id, note="queued in a transaction that fails")
        raise RuntimeError("rolled back")

    assert queued.sent == []
    assert Order.objects.get(pk=order_id).saga_lease_until is None
    assert saga.order_saga_enqueue(order_id=order_id, note="queued again")
    assert [sent_id for sent_id, _ in queued.sent] == [order_id]


def test_the_task_wrapper_retries_with_the_countdown_and_keeps_its_id(
    alice, async_saga, queued, fake_payment, monkeypatch
):
    """Ensure the Celery task turns a countdown into self.retry (same task id) and returns when nothing is left."""
    from celery.exceptions import Retry

    order_id = place(alice).data["id"]
    [(_, runner)] = queued.sent
    fake_payment.fail("charge", times=5)
    fake_payment.fail("charges_for_order", times=5)
    sent = []
    monkeypatch.setattr(
        tasks.order_saga_task, "retry", lambda countdown: sent.append(countdown) or Retry(when=countdown)
    )

    tasks.order_saga_task.push_request(id=runner, retries=0)
    try:
        with pytest.raises(Retry):
            tasks.order_saga_task.run(order_id)
    finally:
        tasks.order_saga_task.pop_request()

    assert len(sent) == 1 and 0.5 <= sent[0] <= 1.0  # base 1 s, half of it jitter
    assert Order.objects.get(pk=order_id).saga_runner == runner
    assert saga.order_saga_claim(order_id=order_id, runner="someone-else") is False


def test_a_task_in_the_broker_holds_a_long_lease_and_a_received_one_a_short_one(alice, async_saga, queued, settings):
    """Ensure the lease is ORDER_SAGA_LEASE_SECONDS while queued, ORDER_SAGA_TASK_LEASE_SECONDS once a worker has it."""
    from types import SimpleNamespace

    from celery import signals

    settings.ORDER_SAGA_LEASE_SECONDS, settings.ORDER_SAGA_TASK_LEASE_SECONDS = 120, 30
    order_id = place(alice).data["id"]
    [(_, runner)] = queued.sent

    def lease_left() -> float:
        return (Order.objects.get(pk=order_id).saga_lease_until - timezone.now()).total_seconds()

    assert 110 < lease_left() <= 120
    # What the worker's consumer does when the message arrives (another task id changes nothing).
    signals.task_received.send(
        sender=None, request=SimpleNamespace(name="orders.saga_run", id="task-someone-else", args=[order_id], eta=None)
    )
    assert 110 < lease_left() <= 120
    signals.task_received.send(
        sender=None, request=SimpleNamespace(name="orders.saga_run", id=runner, args=[order_id], eta=None)
    )
    assert 20 < lease_left() <= 30
    # A retry due in a minute is covered until then, plus the task lease.
    eta = timezone.now() + timezone.timedelta(seconds=60)
    saga.order_saga_received(order_id=order_id, runner=runner, eta=eta)
    assert 80 < lease_left() <= 90
    assert saga.order_saga_claim(order_id=order_id, runner=runner)
    assert 20 < lease_left() <= 30
