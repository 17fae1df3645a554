"""The audit's view of payment: every charge, for the dashboard identity only."""

import pytest

from chassis.testing import bearer, service_token, user_token

URL = "/internal/reconciliation/charges/"


@pytest.mark.django_db
def test_reconciliation_lists_every_charge_for_the_dashboard(api, make_charge, django_assert_max_num_queries):
    """Ensure the dashboard sees every charge with status, amount and refunds, in few queries."""
    make_charge(customer_id=1, amount_cents=700, order_id="11")
    make_charge(customer_id=2, number="4000000000000002", amount_cents=300, order_id="12")
    for n in range(5):
        make_charge(customer_id=3, amount_cents=100, order_id=f"2{n}")
    with django_assert_max_num_queries(3):
        response = api.get(URL, auth=bearer(service_token(caller="dashboard", audience="payment")))
    assert response.status_code == 200
    rows = {r["order_id"]: r for r in response.json()["results"]}
    assert len(rows) == 7
    assert (
        rows["11"]["status"] == "CAPTURED" and rows["11"]["amount_cents"] == 700 and rows["11"]["refunded_cents"] == 0
    )
    assert rows["12"]["status"] == "DECLINED"


@pytest.mark.django_db
def test_reconciliation_is_for_the_dashboard_only(api):
    """Ensure order_service, users and anonymous callers cannot read every charge."""
    assert api.get(URL, auth=bearer(service_token(caller="order", audience="payment"))).status_code == 403
    assert api.get(URL, auth=bearer(user_token(user_id=1, staff=True))).status_code == 403
    assert api.get(URL).status_code == 401
