"""Internal charges: outcomes, idempotency (also under concurrency), ownership, who may call."""

import threading

import pytest
from django.db import connection
from django.test import Client

from chassis.testing import bearer, service_token, user_token
from payments.models import Charge, LedgerEntry

from .conftest import ALICE, BOB, DECLINE_CARD, INSUFFICIENT_CARD, charge_body, new_key

URL = "/internal/charges/"


def _without_request_id(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "request_id"}


@pytest.mark.django_db
def test_charge_approved_is_captured_with_a_ledger_entry(api, order_auth, make_method):
    """Ensure an approving card gives 201 CAPTURED and one +amount ledger entry."""
    method = make_method(ALICE)
    response = api.post(URL, charge_body(method, amount_cents=4999), auth=order_auth, key=new_key())
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "CAPTURED" and body["decline_code"] == ""
    assert body["amount_cents"] == 4999 and body["currency"] == "EUR"
    assert body["payment_method"] == method.token and body["customer_id"] == ALICE
    assert body["order_id"] == "order-1"
    entry = LedgerEntry.objects.get()
    assert (entry.kind, entry.amount_cents, str(entry.charge_id)) == ("CHARGE", 4999, body["id"])


@pytest.mark.django_db
@pytest.mark.parametrize("number, code", [(DECLINE_CARD, "card_declined"), (INSUFFICIENT_CARD, "insufficient_funds")])
def test_charge_declined_is_402_recorded_without_ledger(api, order_auth, make_method, number, code):
    """Ensure a declining card gives 402 with its code and the recorded charge, and no ledger entry."""
    method = make_method(ALICE, number)
    response = api.post(URL, charge_body(method), auth=order_auth, key=new_key())
    assert response.status_code == 402
    body = response.json()
    assert body["code"] == code
    assert body["charge"]["status"] == "DECLINED" and body["charge"]["decline_code"] == code
    assert Charge.objects.get().decline_code == code
    assert LedgerEntry.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("number, expected", [("4242424242424242", 201), (DECLINE_CARD, 402)])
def test_replay_returns_the_same_answer_and_charges_once(api, order_auth, make_method, number, expected):
    """Ensure the same key and body replay the first status and body, with one charge and at most one ledger row."""
    method = make_method(ALICE, number)
    key = new_key()
    first = api.post(URL, charge_body(method), auth=order_auth, key=key)
    second = api.post(URL, charge_body(method), auth=order_auth, key=key)
    assert first.status_code == second.status_code == expected
    assert _without_request_id(first.json()) == _without_request_id(second.json())
    assert "Idempotent-Replayed" not in first and second["Idempotent-Replayed"] == "true"
    assert Charge.objects.count() == 1
    assert LedgerEntry.objects.count() == (1 if expected == 201 else 0)


@pytest.mark.django_db
def test_replay_still_answers_after_the_card_is_removed(api, order_auth, alice_auth, make_method):
    """Ensure a retried charge replays its answer even if the card was removed meanwhile."""
    method = make_method(ALICE)
    key = new_key()
    first = api.post(URL, charge_body(method), auth=order_auth, key=key)
    api.delete(f"/api/payment-methods/{method.token}/", auth=alice_auth)
    second = api.post(URL, charge_body(method), auth=order_auth, key=key)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [{"amount_cents": 2501}, {"order_id": "order-2"}, {"currency": "USD"}],
    ids=["amount", "order", "currency"],
)
def test_same_key_different_body_is_a_conflict(api, order_auth, make_method, change):
    """Ensure a key reused with another body is a 409 idempotency_conflict and charges nothing more."""
    method = make_method(ALICE)
    key = new_key()
    assert api.post(URL, charge_body(method), auth=order_auth, key=key).status_code == 201
    response = api.post(URL, charge_body(method, **change), auth=order_auth, key=key)
    assert response.status_code == 409 and response.json()["code"] == "idempotency_conflict"
    assert Charge.objects.count() == 1 and LedgerEntry.objects.count() == 1


@pytest.mark.django_db
def test_currency_is_normalised_before_comparing_bodies(api, order_auth, make_method):
    """Ensure 'eur' and 'EUR' are the same request (one charge, replayed)."""
    method = make_method(ALICE)
    key = new_key()
    first = api.post(URL, charge_body(method, currency="eur"), auth=order_auth, key=key)
    second = api.post(URL, charge_body(method, currency="EUR"), auth=order_auth, key=key)
    assert first.status_code == second.status_code == 201
    assert first.json()["currency"] == "EUR" and Charge.objects.count() == 1


@pytest.mark.django_db
def test_someone_elses_method_is_refused(api, order_auth, make_method):
    """Ensure a payment method of another customer is a 400 on payment_method and records nothing."""
    bobs = make_method(BOB)
    response = api.post(URL, charge_body(bobs, customer_id=ALICE), auth=order_auth, key=new_key())
    assert response.status_code == 400 and "payment_method" in response.json()["fields"]
    assert Charge.objects.count() == 0


@pytest.mark.django_db
def test_unknown_or_removed_method_is_refused(api, order_auth, alice_auth, make_method):
    """Ensure an unknown token and a removed card are both a 400 on payment_method."""
    method = make_method(ALICE)
    unknown = api.post(URL, charge_body(method, payment_method="pm_nope"), auth=order_auth, key=new_key())
    api.delete(f"/api/payment-methods/{method.token}/", auth=alice_auth)
    removed = api.post(URL, charge_body(method), auth=order_auth, key=new_key())
    for response in (unknown, removed):
        assert response.status_code == 400 and "payment_method" in response.json()["fields"]
    assert Charge.objects.count() == 0


BAD_BODIES = [
    ("amount zero", {"amount_cents": 0}, "amount_cents"),
    ("amount negative", {"amount_cents": -5}, "amount_cents"),
    ("amount too big", {"amount_cents": 10**9 + 1}, "amount_cents"),
    ("amount huge", {"amount_cents": 10**40}, "amount_cents"),
    ("amount text", {"amount_cents": "ten"}, "amount_cents"),
    ("amount float", {"amount_cents": 12.5}, "amount_cents"),
    ("currency digits", {"currency": "E1R"}, "currency"),
    ("currency long", {"currency": "EURO"}, "currency"),
    ("customer zero", {"customer_id": 0}, "customer_id"),
    ("customer text", {"customer_id": "alice"}, "customer_id"),
    ("order id long", {"order_id": "x" * 65}, "order_id"),
    ("order id spaces", {"order_id": "a b"}, "order_id"),
    ("order id object", {"order_id": {"id": 1}}, "order_id"),
    ("method long", {"payment_method": "pm_" + "x" * 62}, "payment_method"),
    ("method null", {"payment_method": None}, "payment_method"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("label, change, field", BAD_BODIES, ids=[case[0] for case in BAD_BODIES])
def test_bad_charge_bodies_are_400(api, order_auth, make_method, label, change, field):
    """Ensure each malformed charge body is a 400 naming the field, with nothing written."""
    method = make_method(ALICE)
    response = api.post(URL, charge_body(method, **change), auth=order_auth, key=new_key())
    assert response.status_code == 400
    assert field in response.json()["fields"]
    assert Charge.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("key", [None, "short", "has spaces in it", "k" * 129])
def test_missing_or_malformed_idempotency_key_is_400(api, order_auth, make_method, key):
    """Ensure the Idempotency-Key header is required and validated."""
    method = make_method(ALICE)
    response = api.post(URL, charge_body(method), auth=order_auth, key=key)
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["fields"]
    assert Charge.objects.count() == 0


@pytest.mark.django_db
def test_malformed_json_is_400(api, order_auth):
    """Ensure a broken JSON body is a 400 in the chassis format."""
    response = api.post(URL, raw="{not json", auth=order_auth, key=new_key())
    assert response.status_code == 400 and response.json()["code"] == "parse_error"


@pytest.mark.django_db
def test_only_order_service_may_charge(api, make_method):
    """Ensure no token → 401, a user (even staff) → 403, the inventory service → 403."""
    method = make_method(ALICE)
    body = charge_body(method)
    staff = bearer(user_token(user_id=1, staff=True))
    inventory = bearer(service_token(caller="inventory", audience="payment"))
    wrong_audience = bearer(service_token(caller="order", audience="inventory"))
    assert api.post(URL, body, key=new_key()).status_code == 401
    assert api.post(URL, body, auth=staff, key=new_key()).status_code == 403
    assert api.post(URL, body, auth=inventory, key=new_key()).status_code == 403
    assert api.post(URL, body, auth=wrong_audience, key=new_key()).status_code == 401
    assert api.get(f"{URL}?order_id=order-1", auth=inventory).status_code == 403
    assert api.get(f"{URL}?order_id=order-1", auth=staff).status_code == 403
    assert Charge.objects.count() == 0


@pytest.mark.django_db
def test_list_charges_of_an_order(api, order_auth, make_charge, django_assert_max_num_queries):
    """Ensure order_service lists exactly one order's charges, with refunds, in few queries."""
    declined = make_charge(number=DECLINE_CARD, order_id="order-7")
    captured = make_charge(order_id="order-7")
    make_charge(order_id="order-8")
    with django_assert_max_num_queries(3):
        response = api.get(f"{URL}?order_id=order-7", auth=order_auth)
    body = response.json()
    assert response.status_code == 200 and body["count"] == 2
    assert [item["id"] for item in body["results"]] == [str(declined.id), str(captured.id)]
    assert body["results"][1]["refunds"] == [] and body["results"][1]["refunded_cents"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["", "?order_id=", "?order_id=" + "x" * 65])
def test_list_charges_needs_a_valid_order_id(api, order_auth, query):
    """Ensure listing charges without a usable order_id is a 400."""
    response = api.get(f"{URL}{query}", auth=order_auth)
    assert response.status_code == 400 and "order_id" in response.json()["fields"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_same_key_charges_charge_once(make_method):
    """Ensure many simultaneous requests with one key make one charge, one ledger entry and one answer."""
    method = make_method(ALICE)
    key, body = new_key(), charge_body(method)
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    results, errors = [], []

    def submit():
        try:
            client = Client()
            token = bearer(service_token(caller="order", audience="payment"))
            barrier.wait(timeout=10)
            response = client.post(URL, data=body, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key, **token)
            results.append((response.status_code, response.json()))
        except Exception as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors
    assert len(results) == threads_count
    assert {status for status, _ in results} == {201}
    assert len({body["id"] for _, body in results}) == 1
    assert Charge.objects.count() == 1
    assert LedgerEntry.objects.count() == 1
