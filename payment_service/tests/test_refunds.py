"""Internal refunds: full, partial, too much, replayed, on declined charges, concurrent."""

import threading

import pytest
from django.db import connection
from django.test import Client

from chassis.testing import bearer, service_token, user_token
from payments.models import LedgerEntry, Refund

from .conftest import DECLINE_CARD, new_key


def refund_url(charge) -> str:
    return f"/internal/charges/{charge.id}/refunds/"


@pytest.mark.django_db
def test_full_refund_without_amount(api, order_auth, make_charge):
    """Ensure a refund without amount gives back everything, with a -amount ledger entry."""
    charge = make_charge(amount_cents=3000)
    response = api.post(refund_url(charge), {"reason": "order cancelled"}, auth=order_auth, key=new_key())
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["amount_cents"] == 3000 and body["charge"] == str(charge.id)
    assert body["currency"] == "EUR" and body["reason"] == "order cancelled"
    charge.refresh_from_db()
    assert charge.refunded_cents == 3000
    entry = LedgerEntry.objects.get(kind="REFUND")
    assert entry.amount_cents == -3000 and str(entry.refund_id) == body["id"]


@pytest.mark.django_db
def test_partial_refunds_then_the_rest(api, order_auth, make_charge):
    """Ensure partial refunds add up and a refund without amount takes only what remains."""
    charge = make_charge(amount_cents=1000)
    first = api.post(refund_url(charge), {"amount_cents": 300, "reason": "damaged"}, auth=order_auth, key=new_key())
    rest = api.post(refund_url(charge), {"reason": "cancelled"}, auth=order_auth, key=new_key())
    assert (first.status_code, rest.status_code) == (201, 201)
    assert (first.json()["amount_cents"], rest.json()["amount_cents"]) == (300, 700)
    charge.refresh_from_db()
    assert charge.refunded_cents == 1000
    assert sorted(LedgerEntry.objects.values_list("amount_cents", flat=True)) == [-700, -300, 1000]


@pytest.mark.django_db
def test_over_refund_is_409(api, order_auth, make_charge):
    """Ensure refunding more than remains is a 409 refund_exceeds_charge and changes nothing."""
    charge = make_charge(amount_cents=1000)
    api.post(refund_url(charge), {"amount_cents": 600, "reason": "part"}, auth=order_auth, key=new_key())
    response = api.post(refund_url(charge), {"amount_cents": 401, "reason": "too much"}, auth=order_auth, key=new_key())
    assert response.status_code == 409
    assert response.json()["code"] == "refund_exceeds_charge" and response.json()["refundable_cents"] == 400
    charge.refresh_from_db()
    assert charge.refunded_cents == 600 and Refund.objects.count() == 1


@pytest.mark.django_db
def test_refund_of_a_fully_refunded_charge_is_409(api, order_auth, make_charge):
    """Ensure nothing more can be refunded once everything was, even without an amount."""
    charge = make_charge(amount_cents=1000)
    api.post(refund_url(charge), {"reason": "all"}, auth=order_auth, key=new_key())
    response = api.post(refund_url(charge), {"reason": "again"}, auth=order_auth, key=new_key())
    assert response.status_code == 409 and response.json()["code"] == "refund_exceeds_charge"
    assert Refund.objects.count() == 1


@pytest.mark.django_db
def test_refund_replay_returns_the_same_refund(api, order_auth, make_charge):
    """Ensure the same key and body replay the refund instead of refunding twice."""
    charge = make_charge(amount_cents=1000)
    key, body = new_key(), {"amount_cents": 250, "reason": "late"}
    first = api.post(refund_url(charge), body, auth=order_auth, key=key)
    second = api.post(refund_url(charge), body, auth=order_auth, key=key)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json() and second["Idempotent-Replayed"] == "true"
    charge.refresh_from_db()
    assert charge.refunded_cents == 250 and Refund.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="REFUND").count() == 1


@pytest.mark.django_db
def test_refund_key_reused_with_another_body_is_409(api, order_auth, make_charge):
    """Ensure a refund key reused with another amount or charge is an idempotency_conflict."""
    charge, other = make_charge(amount_cents=1000), make_charge(amount_cents=1000)
    key = new_key()
    api.post(refund_url(charge), {"amount_cents": 100, "reason": "a"}, auth=order_auth, key=key)
    amount = api.post(refund_url(charge), {"amount_cents": 200, "reason": "a"}, auth=order_auth, key=key)
    elsewhere = api.post(refund_url(other), {"amount_cents": 100, "reason": "a"}, auth=order_auth, key=key)
    for response in (amount, elsewhere):
        assert response.status_code == 409 and response.json()["code"] == "idempotency_conflict"
    assert Refund.objects.count() == 1


@pytest.mark.django_db
def test_refund_of_a_declined_charge_is_409(api, order_auth, make_charge):
    """Ensure a declined charge cannot be refunded."""
    charge = make_charge(number=DECLINE_CARD)
    response = api.post(refund_url(charge), {"reason": "x"}, auth=order_auth, key=new_key())
    assert response.status_code == 409 and response.json()["code"] == "charge_not_captured"
    assert Refund.objects.count() == 0 and LedgerEntry.objects.count() == 0


@pytest.mark.django_db
def test_refund_of_an_unknown_charge_is_404(api, order_auth):
    """Ensure refunding a charge that does not exist is a 404."""
    url = "/internal/charges/00000000-0000-0000-0000-000000000000/refunds/"
    response = api.post(url, {"reason": "x"}, auth=order_auth, key=new_key())
    assert response.status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, field",
    [
        ({"amount_cents": 0, "reason": "x"}, "amount_cents"),
        ({"amount_cents": -1, "reason": "x"}, "amount_cents"),
        ({"amount_cents": 10**9 + 1, "reason": "x"}, "amount_cents"),
        ({"amount_cents": "all", "reason": "x"}, "amount_cents"),
        ({}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": "r" * 201}, "reason"),
        ({"reason": ["x"]}, "reason"),
    ],
)
def test_bad_refund_bodies_are_400(api, order_auth, make_charge, body, field):
    """Ensure each malformed refund body is a 400 naming the field, with nothing written."""
    charge = make_charge()
    response = api.post(refund_url(charge), body, auth=order_auth, key=new_key())
    assert response.status_code == 400 and field in response.json()["fields"]
    assert Refund.objects.count() == 0


@pytest.mark.django_db
def test_only_order_service_may_refund(api, make_charge):
    """Ensure no token → 401, a user → 403, another service → 403, and nothing is refunded."""
    charge = make_charge()
    body = {"reason": "x"}
    assert api.post(refund_url(charge), body, key=new_key()).status_code == 401
    user = bearer(user_token(user_id=charge.customer_id))
    assert api.post(refund_url(charge), body, auth=user, key=new_key()).status_code == 403
    inventory = bearer(service_token(caller="inventory", audience="payment"))
    assert api.post(refund_url(charge), body, auth=inventory, key=new_key()).status_code == 403
    assert Refund.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_refunds_never_exceed_the_charge(make_charge):
    """Ensure simultaneous refunds with different keys never give back more than was captured."""
    charge = make_charge(amount_cents=1000)
    threads_count = 6
    barrier = threading.Barrier(threads_count)
    statuses, errors = [], []

    def refund():
        try:
            client = Client()
            token = bearer(service_token(caller="order", audience="payment"))
            barrier.wait(timeout=10)
            response = client.post(
                refund_url(charge),
                data={"amount_cents": 300, "reason": "race"},
                content_type="application/json",
                HTTP_IDEMPOTENCY_KEY=new_key("race"),
                **token,
            )
            statuses.append(response.status_code)
        except Exception as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=refund) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors
    assert sorted(statuses) == [201, 201, 201, 409, 409, 409]
    charge.refresh_from_db()
    assert charge.refunded_cents == 900
    assert sum(LedgerEntry.objects.filter(charge=charge).values_list("amount_cents", flat=True)) == 100
