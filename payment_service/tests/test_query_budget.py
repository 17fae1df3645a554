"""The SQL statements a checkout's charge costs payment_service (issue 11's query budget).

Counted as ``lab_db_queries_total`` counts them (``chassis.testing.statements_counted``), in
real transactions (``transaction=True``), so the figures are those of the running service.
"""

import pytest
from django.db import connection

from chassis.testing import statements_counted
from payments.models import Charge, LedgerEntry

from .conftest import charge_body, new_key

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/internal/charges/"
# The payment method, the charge (its unique key tells a replay: no lookup first), its ledger
# entry, and the settlement of its key read under lock once the charge is written (a void that
# came first refuses it).
CHARGE = 4


def test_a_charge_stays_within_its_statements(api, order_auth, make_method):
    """Ensure a captured charge costs 4 statements, with its ledger entry as ever."""
    method = make_method()
    connection.ensure_connection()  # a new connection's session setup is not the charge's

    with statements_counted() as charging:
        response = api.post(URL, charge_body(method, amount_cents=4999), auth=order_auth, key=new_key())

    assert response.status_code == 201, response.json()
    assert charging.count == CHARGE, charging.sql
    charge = Charge.objects.get()
    assert charge.status == Charge.Status.CAPTURED and charge.amount_cents == 4999
    assert list(LedgerEntry.objects.values_list("kind", "amount_cents")) == [("CHARGE", 4999)]
