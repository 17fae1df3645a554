"""Internal settlements: a charge whose answer was lost is settled by its key (refunded, or the key voided)."""

import threading

import pytest
from django.db import connection
from django.test import Client

from chassis.testing import bearer, service_token
from payments import services
from payments.models import Charge, ChargeSettlement, LedgerEntry

from .conftest import DECLINE_CARD, charge_body, new_key

SETTLE_URL = "/internal/settlements/"


def settle(api, auth, *, charge_key, order_id="order-1", key=None):
    body = {"charge_key": charge_key, "order_id": order_id, "reason": "order cancelled"}
    return api.post(SETTLE_URL, body, auth=auth, key=key or new_key("settle"))


def charge(api, auth, method, *, charge_key, order_id="order-1"):
    return api.post("/internal/charges/", charge_body(method, order_id=order_id), auth=auth, key=charge_key)


@pytest.mark.django_db
def test_settling_a_key_that_captured_refunds_it(api, order_auth, make_method):
    """Ensure a captured charge is refunded in full by its key, with its ledger entry, and the answer says so."""
    method = make_method()
    captured = charge(api, order_auth, method, charge_key="order-1-charge")
    assert captured.status_code == 201

    response = settle(api, order_auth, charge_key="order-1-charge")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["outcome"], body["charge"], body["refunded_cents"]) == ("REFUNDED", captured.json()["id"], 2500)
    charge_row = Charge.objects.get(idempotency_key="order-1-charge")
    assert charge_row.refunded_cents == 2500
    assert sum(LedgerEntry.objects.filter(charge=charge_row).values_list("amount_cents", flat=True)) == 0


@pytest.mark.django_db
def test_settling_a_key_that_charged_nothing_voids_it_and_a_late_charge_is_refused(api, order_auth, make_method):
    """Ensure a key with no charge is voided: a charge arriving afterwards is a 409 charge_voided, charging nothing."""
    method = make_method()

    response = settle(api, order_auth, charge_key="order-2-charge", order_id="order-2")
    late = charge(api, order_auth, method, charge_key="order-2-charge", order_id="order-2")

    assert response.status_code == 201
    assert (response.json()["outcome"], response.json()["charge"]) == ("VOIDED", None)
    assert late.status_code == 409 and late.json()["code"] == "charge_voided"
    assert Charge.objects.count() == 0 and LedgerEntry.objects.count() == 0


@pytest.mark.django_db
def test_settling_again_answers_the_first_settlement(api, order_auth, make_method):
    """Ensure a second settlement of a key (another request key) replays the first and refunds nothing more."""
    method = make_method()
    charge(api, order_auth, method, charge_key="order-3-charge", order_id="order-3")
    first = settle(api, order_auth, charge_key="order-3-charge", order_id="order-3")

    again = settle(api, order_auth, charge_key="order-3-charge", order_id="order-3")

    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert ChargeSettlement.objects.count() == 1
    assert Charge.objects.get().refunded_cents == 2500


@pytest.mark.django_db
def test_declined_or_refunded_charges_have_nothing_to_give_back(api, order_auth, make_method):
    """Ensure a declined key is NOT_CAPTURED and a key already refunded in full is ALREADY_REFUNDED, no refund made."""
    declined = make_method(number=DECLINE_CARD)
    assert charge(api, order_auth, declined, charge_key="order-4-charge", order_id="order-4").status_code == 402
    approved = make_method()
    made = charge(api, order_auth, approved, charge_key="order-5-charge", order_id="order-5").json()
    refund = api.post(
        f"/internal/charges/{made['id']}/refunds/", {"reason": "cancelled"}, auth=order_auth, key=new_key()
    )
    assert refund.status_code == 201

    nothing = settle(api, order_auth, charge_key="order-4-charge", order_id="order-4")
    already = settle(api, order_auth, charge_key="order-5-charge", order_id="order-5")

    assert (nothing.json()["outcome"], nothing.json()["refund"]) == ("NOT_CAPTURED", None)
    assert (already.json()["outcome"], already.json()["refund"]) == ("ALREADY_REFUNDED", None)
    assert LedgerEntry.objects.filter(kind="REFUND").count() == 1


@pytest.mark.django_db
def test_a_key_that_charged_another_order_is_409_and_settles_nothing(api, order_auth, make_method):
    """Ensure settling a key for an order it did not charge is a 409 charge_key_mismatch that changes nothing."""
    method = make_method()
    charge(api, order_auth, method, charge_key="order-6-charge", order_id="order-6")

    response = settle(api, order_auth, charge_key="order-6-charge", order_id="order-7")

    assert response.status_code == 409 and response.json()["code"] == "charge_key_mismatch"
    assert ChargeSettlement.objects.count() == 0 and Charge.objects.get().refunded_cents == 0


@pytest.mark.django_db
def test_bad_input_is_400_and_only_order_service_may_settle(api, order_auth, alice_auth):
    """Ensure a malformed body or a missing Idempotency-Key is a 400 naming the field, and users are refused."""
    bad = api.post(SETTLE_URL, {"charge_key": "short", "order_id": "o 1"}, auth=order_auth, key=new_key())
    no_key = api.post(SETTLE_URL, {"charge_key": "order-1-charge", "order_id": "1", "reason": "x"}, auth=order_auth)
    user = settle(api, alice_auth, charge_key="order-1-charge")
    dashboard = settle(api, bearer(service_token(caller="dashboard", audience="payment")), charge_key="order-1-charge")

    assert bad.status_code == 400 and set(bad.json()["fields"]) == {"charge_key", "order_id", "reason"}
    assert no_key.status_code == 400 and "Idempotency-Key" in no_key.json()["fields"]
    assert (user.status_code, dashboard.status_code) == (403, 403)
    assert ChargeSettlement.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_charge_and_a_settlement_of_one_key_racing_never_leave_money_held(make_method):
    """Ensure a charge and a settlement of the same key sent at once never end with money captured and kept."""
    rounds = 8
    outcomes = []
    for attempt in range(rounds):
        method = make_method()
        charge_key, order_id = f"race-{attempt}-charge", f"race-{attempt}"
        barrier = threading.Barrier(2)
        answers, errors = {}, []

        def call(name, path, body, key, answers=answers, errors=errors, barrier=barrier):
            try:
                token = bearer(service_token(caller="order", audience="payment"))
                client = Client()
                barrier.wait(timeout=10)
                answers[name] = client.post(
                    path, data=body, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key, **token
                )
            except Exception as exc:  # noqa: BLE001 — reported by the assertion below
                errors.append(exc)
            finally:
                connection.close()

        threads = [
            threading.Thread(
                target=call,
                args=("charge", "/internal/charges/", charge_body(method, order_id=order_id), charge_key),
            ),
            threading.Thread(
                target=call,
                args=(
                    "settle",
                    SETTLE_URL,
                    {"charge_key": charge_key, "order_id": order_id, "reason": "race"},
                    f"race-{attempt}-settle",
                ),
            ),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert not errors
        assert answers["settle"].status_code == 201, answers["settle"].json()
        outcome = answers["settle"].json()["outcome"]
        outcomes.append(outcome)
        if outcome == "VOIDED":
            assert answers["charge"].status_code == 409 and answers["charge"].json()["code"] == "charge_voided"
            assert not Charge.objects.filter(idempotency_key=charge_key).exists()
        else:
            assert outcome == "REFUNDED" and answers["charge"].status_code == 201
        held = Charge.objects.filter(order_id=order_id, status="CAPTURED").values_list("amount_cents", "refunded_cents")
        assert sum(amount - refunded for amount, refunded in held) == 0
    assert len(outcomes) == rounds


@pytest.mark.django_db
def test_the_service_function_settles_by_key(make_charge):
    """Ensure charge_settle finds the charge by its key, whatever its order id looks like."""
    made = make_charge(order_id="42")

    result = services.charge_settle(
        charge_key=made.idempotency_key, order_id="42", reason="lost answer", idempotency_key=new_key()
    )

    assert (result.settlement.outcome, result.settlement.charge_id, result.replayed) == ("REFUNDED", made.pk, False)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change, field",
    [({"reason": 5}, "reason"), ({"order_id": 1.5}, "order_id"), ({"order_id": True}, "order_id")],
)
def test_a_settlement_of_the_wrong_types_is_400_and_settles_nothing(api, order_auth, change, field):
    """Ensure a reason that is no string, or an order id that is neither a string nor an integer, is refused."""
    body = {"charge_key": "order-9-charge", "order_id": "order-9", "reason": "order cancelled", **change}

    response = api.post(SETTLE_URL, body, auth=order_auth, key=new_key("settle"))

    assert response.status_code == 400, response.json()
    assert field in response.json()["fields"]
    assert ChargeSettlement.objects.count() == 0


@pytest.mark.django_db
def test_an_integer_order_id_is_kept_as_its_decimal_string(api, order_auth):
    """Ensure order_service's integer order ids are accepted, as the schema's oneOf says."""
    body = {"charge_key": "order-9-charge", "order_id": 9, "reason": "order cancelled"}

    response = api.post(SETTLE_URL, body, auth=order_auth, key=new_key("settle"))

    assert response.status_code == 201, response.json()
    assert response.json()["order_id"] == "9"
