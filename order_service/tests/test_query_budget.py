"""The SQL statements a synchronous checkout costs order_service, step by step (issue 11's query budget).

Counted as ``lab_db_queries_total`` counts them (``chassis.testing.statements_counted``), in
real transactions (``transaction=True``), so the figures are those of the running service.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework import serializers

from chassis.testing import statements_counted
from orders import tasks
from orders.clients import inventory, payment
from orders.models import Order
from tests.conftest import order_body, place

pytestmark = pytest.mark.django_db(transaction=True)

# The order (its unique key tells a replay: no lookup first), its lines and its first event in
# one transaction (the reservation's body and the answer use the lines and events as written).
BEFORE_RESERVE = 3
# The reservation and the charge about to be sent recorded in one UPDATE that reprices the lines too
# (the order and its lines in one multi-table UPDATE), one event.
AFTER_RESERVE = 2
# The charge and the commit about to be sent in one UPDATE, one event: written before the commit is sent, so
# that while it is in flight a customer's cancel or the recovery job finds the order at "committing".
AFTER_CHARGE = 2
# The confirmation (the lease given back) in one UPDATE, two events (committed, confirmed) in one INSERT;
# the answer is the order as the saga holds it, with its lines and timeline, not read back.
AFTER_COMMIT = 2


@pytest.fixture
def counted(monkeypatch, fake_inventory, fake_payment):
    """Statements counted through one request, marked at each peer call (``counter.times``: when each was made)."""
    connection.ensure_connection()  # a new connection's session setup is not the checkout's
    with statements_counted() as counter:
        counter.times = {}
        for module, name, fake in (
            (inventory, "inventory_reserve", fake_inventory.reserve),
            (payment, "payment_charge", fake_payment.charge),
            (inventory, "inventory_commit", fake_inventory.commit),
        ):

            def marked(*args, _fake=fake, _name=name, **kwargs):
                counter.mark(_name)
                counter.times[_name] = serializers.DateTimeField().to_representation(timezone.now())
                return _fake(*args, **kwargs)

            monkeypatch.setattr(module, name, marked)
        yield counter


def test_a_checkout_stays_within_its_statements_per_step(alice, counted):
    """Ensure a sync checkout runs 7 statements in order_service, each step its share, with the usual answer."""
    response = place(alice, order_body())

    assert response.status_code == 201 and response.data["status"] == "CONFIRMED", response.data
    assert counted.between_marks() == {
        "inventory_reserve": BEFORE_RESERVE,
        "payment_charge": AFTER_RESERVE,
        "inventory_commit": AFTER_CHARGE,
        "end": AFTER_COMMIT,
    }, [counted.between_marks(), counted.sql]
    assert counted.count == BEFORE_RESERVE + AFTER_RESERVE + AFTER_CHARGE + AFTER_COMMIT == 9
    # Answered from memory, the order reads as it does from the database.
    assert alice.get(f"/api/orders/{response.data['id']}/").data == response.data
    history = response.data["history"]
    assert [(event["status"], event["step"]) for event in history] == [
        ("PENDING", "received"),
        ("PENDING", "reserved"),
        ("PENDING", "charged"),
        ("CONFIRMED", "committed"),
        ("CONFIRMED", "confirmed"),
    ]
    # The charge written with the commit keeps the time it was answered: before the commit was sent.
    charged_at, committed_at = (event["at"] for event in history[2:4])
    assert charged_at <= counted.times["inventory_commit"] <= committed_at, (history, counted.times)


# The order (its unique key tells a replay: no lookup first, the catalog lookup is a peer call), its
# lines, and its two events (received, queued) in one INSERT; the 202 is the order as written, not read back.
ASYNC_ACCEPT = 3


def test_an_async_checkout_is_accepted_within_its_statements(alice, async_saga, fake_inventory, monkeypatch):
    """Ensure an async checkout's 202 costs 3 statements (its saga runs later, in the worker), with the usual answer."""
    sent = []
    monkeypatch.setattr(tasks.order_saga_task, "apply_async", lambda args, task_id, **_: sent.append(args[0]))
    connection.ensure_connection()
    with statements_counted() as accepting:
        response = place(alice, order_body())

    assert response.status_code == 202 and response.data["saga_step"] == "reserving", response.data
    assert accepting.count == ASYNC_ACCEPT, accepting.sql
    assert [event["step"] for event in response.data["history"]] == ["received", "queued"]
    assert fake_inventory.calls_to("lookup") == [("KB-001", "MS-002")] and sent == [response.data["id"]]
    # Answered from memory, the order reads as it does from the database.
    assert alice.get(f"/api/orders/{response.data['id']}/").data == response.data
    order = Order.objects.get(pk=response.data["id"])
    assert order.saga_deadline == order.created_at + timedelta(seconds=120)
