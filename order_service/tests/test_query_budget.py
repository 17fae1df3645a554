"""The SQL statements a synchronous checkout costs order_service, step by step (issue 11's query budget).

Counted as ``lab_db_queries_total`` counts them (``chassis.testing.statements_counted``), in
real transactions (``transaction=True``), so the figures are those of the running service.
"""

import pytest
from django.db import connection

from chassis.testing import statements_counted
from orders.clients import inventory, payment
from tests.conftest import order_body, place

pytestmark = pytest.mark.django_db(transaction=True)

# The order (its unique key tells a replay: no lookup first), its lines and its first event in
# one transaction (the reservation's body and the answer use the lines and events as written).
BEFORE_RESERVE = 3
# The reservation and the charge about to be sent recorded in one UPDATE, the lines repriced, one event.
AFTER_RESERVE = 3
# The charge and the commit about to be sent in one UPDATE, one event.
AFTER_CHARGE = 2
# Confirmed (the lease given back in the same UPDATE), two events; the answer is the order as
# the saga holds it, with its lines and timeline, not read back.
AFTER_COMMIT = 2


@pytest.fixture
def counted(monkeypatch, fake_inventory, fake_payment):
    """Statements counted through one request, marked at each peer call."""
    connection.ensure_connection()  # a new connection's session setup is not the checkout's
    with statements_counted() as counter:
        for module, name, fake in (
            (inventory, "inventory_reserve", fake_inventory.reserve),
            (payment, "payment_charge", fake_payment.charge),
            (inventory, "inventory_commit", fake_inventory.commit),
        ):

            def marked(*args, _fake=fake, _name=name, **kwargs):
                counter.mark(_name)
                return _fake(*args, **kwargs)

            monkeypatch.setattr(module, name, marked)
        yield counter


def test_a_checkout_stays_within_its_statements_per_step(alice, counted):
    """Ensure a sync checkout runs 10 statements in order_service, each step its share, with the usual answer."""
    response = place(alice, order_body())

    assert response.status_code == 201 and response.data["status"] == "CONFIRMED", response.data
    assert counted.between_marks() == {
        "inventory_reserve": BEFORE_RESERVE,
        "payment_charge": AFTER_RESERVE,
        "inventory_commit": AFTER_CHARGE,
        "end": AFTER_COMMIT,
    }, [counted.between_marks(), counted.sql]
    assert counted.count == BEFORE_RESERVE + AFTER_RESERVE + AFTER_CHARGE + AFTER_COMMIT == 10
    # Answered from memory, the order reads as it does from the database.
    assert alice.get(f"/api/orders/{response.data['id']}/").data == response.data
