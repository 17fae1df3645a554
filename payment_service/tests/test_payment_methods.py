"""Tokenising cards, listing and removing them, and keeping the number secret."""

import logging
import re
from datetime import date

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from payments.models import PaymentMethod

from .conftest import (
    ALICE,
    AMEX_CARD,
    APPROVE_CARD,
    BOB,
    DECLINE_CARD,
    INSUFFICIENT_CARD,
    MASTERCARD_CARD,
    NEXT_YEAR,
    card_body,
)

URL = "/api/payment-methods/"
pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "number, brand, outcome",
    [
        (APPROVE_CARD, "visa", "approve"),
        (DECLINE_CARD, "visa", "decline"),
        (INSUFFICIENT_CARD, "visa", "insufficient_funds"),
        (MASTERCARD_CARD, "mastercard", "approve"),
    ],
)
def test_tokenise_test_cards(api, alice_auth, number, brand, outcome):
    """Ensure each test card is tokenised with its brand, last4 and lab outcome."""
    response = api.post(URL, card_body(number), auth=alice_auth)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == {"token", "brand", "last4", "exp_month", "exp_year"}
    assert body["token"].startswith("pm_") and len(body["token"]) == 27
    assert body["brand"] == brand and body["last4"] == number[-4:]
    assert (body["exp_month"], body["exp_year"]) == (12, NEXT_YEAR)
    method = PaymentMethod.objects.get(token=body["token"])
    assert method.customer_id == ALICE and method.outcome == outcome


def test_tokenise_amex_needs_four_digit_cvc(api, alice_auth):
    """Ensure an amex card takes a 4-digit CVC and refuses a 3-digit one."""
    refused = api.post(URL, card_body(AMEX_CARD, cvc="123"), auth=alice_auth)
    assert refused.status_code == 400 and "cvc" in refused.json()["fields"]
    accepted = api.post(URL, card_body(AMEX_CARD, cvc="1234"), auth=alice_auth)
    assert accepted.status_code == 201 and accepted.json()["brand"] == "amex"


def test_tokenise_accepts_spaces_and_dashes(api, alice_auth):
    """Ensure a number typed with spaces or dashes is accepted."""
    response = api.post(URL, card_body("4242 4242-4242 4242"), auth=alice_auth)
    assert response.status_code == 201 and response.json()["last4"] == "4242"


this_year = date.today().year
BAD_CARDS = [
    ("luhn failure", card_body("4242424242424241"), "card_number"),
    ("non digits", card_body("4242abcd42424242"), "card_number"),
    ("too short", card_body("42424242424"), "card_number"),
    ("too many digits", card_body("4242424242424242424"[:-1] + "42"), "card_number"),
    ("too long string", card_body("4" * 31), "card_number"),
    ("number as list", card_body([4242]), "card_number"),
    ("past year", card_body(exp_year=this_year - 1), "exp_year"),
    ("month 13", card_body(exp_month=13), "exp_month"),
    ("month 0", card_body(exp_month=0), "exp_month"),
    ("month text", card_body(exp_month="dec"), "exp_month"),
    ("year 2 digits", card_body(exp_year=30), "exp_year"),
    ("cvc letters", card_body(cvc="12a"), "cvc"),
    ("cvc too short", card_body(cvc="12"), "cvc"),
    ("cvc too long", card_body(cvc="12345"), "cvc"),
    ("cvc 4 digits on visa", card_body(cvc="1234"), "cvc"),
    ("missing number", {k: v for k, v in card_body().items() if k != "card_number"}, "card_number"),
    ("missing cvc", {k: v for k, v in card_body().items() if k != "cvc"}, "cvc"),
]
if date.today().month > 1:
    BAD_CARDS.append(
        ("past month this year", card_body(exp_month=date.today().month - 1, exp_year=this_year), "exp_month")
    )


@pytest.mark.parametrize("label, body, field", BAD_CARDS, ids=[case[0] for case in BAD_CARDS])
def test_tokenise_refuses_bad_input(api, alice_auth, label, body, field):
    """Ensure bad card input is a 400 naming the field, never quoting the number, and saves nothing."""
    response = api.post(URL, body, auth=alice_auth)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "invalid" and field in error["fields"]
    number = body.get("card_number")
    if isinstance(number, str) and len(number) > 4:
        assert number not in response.content.decode()
    assert PaymentMethod.objects.count() == 0


def test_tokenise_reports_every_missing_field(api, alice_auth):
    """Ensure an empty body names each required field."""
    response = api.post(URL, {}, auth=alice_auth)
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"card_number", "exp_month", "exp_year", "cvc"}


@pytest.mark.parametrize("raw", ['{"card_number": "4242', "[1, 2]", '"text"', "null", "\xff\xfe"])
def test_tokenise_refuses_malformed_json(api, alice_auth, raw):
    """Ensure a body that is not a JSON object is a 400 in the chassis format."""
    response = api.post(URL, raw=raw, auth=alice_auth)
    assert response.status_code == 400
    assert {"code", "message", "request_id"} <= set(response.json())
    assert PaymentMethod.objects.count() == 0


def test_tokenise_needs_a_user(api, order_auth):
    """Ensure anonymous callers get 401 and services get 403."""
    assert api.post(URL, card_body()).status_code == 401
    assert api.post(URL, card_body(), auth=order_auth).status_code == 403


def test_card_number_is_never_stored_nor_logged(api, alice_auth, caplog):
    """Ensure the number and CVC appear in no table, no SQL statement, no log line and no error."""
    secret, expired_secret, bad_cvc = "4000056655665556", "5105105105105100", "9731"
    caplog.set_level(logging.DEBUG)
    with CaptureQueriesContext(connection) as queries:
        created = api.post(URL, card_body(secret, cvc="987"), auth=alice_auth)
        expired = api.post(URL, card_body(expired_secret, exp_year=this_year - 1), auth=alice_auth)
        wrong_cvc = api.post(URL, card_body(secret, cvc=bad_cvc), auth=alice_auth)
    assert created.status_code == 201 and expired.status_code == 400 and wrong_cvc.status_code == 400

    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            dump.extend(repr(row) for row in cursor.fetchall())
    dump = "\n".join(dump)
    assert created.json()["token"] in dump  # the dump really covers the payment methods
    sql = "\n".join(query["sql"] for query in queries.captured_queries)
    assert "INSERT" in sql
    for haystack in (dump, sql, caplog.text, expired.content.decode(), wrong_cvc.content.decode()):
        for needle in (secret, expired_secret, secret[:-4], expired_secret[:-4]):
            assert needle not in haystack
    # Short CVCs could match digits of a timestamp in the dump; check where they could leak verbatim, as a value
    # of their own: the random request ids and tokens in the same text are hex and may hold the same digits.
    for haystack in (caplog.text, wrong_cvc.content.decode(), created.content.decode()):
        for cvc in (bad_cvc, "987"):
            assert not re.search(rf"(?<![0-9a-fA-F]){cvc}(?![0-9a-fA-F])", haystack), (cvc, haystack)


def test_browsable_api_renders_and_does_not_echo_the_card(api, alice_auth):
    """Ensure the HTML browsable API works and a submitted card is not echoed back into the page."""
    page = api.get(URL, auth=alice_auth, HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    assert b"card_number" in page.content  # the tokenise form is offered
    submitted = api.post(URL, card_body("4000056655665556"), auth=alice_auth, HTTP_ACCEPT="text/html")
    assert submitted.status_code == 201
    assert b"4000056655665556" not in submitted.content


def test_list_shows_only_own_methods(api, alice_auth, bob_auth, make_method, django_assert_max_num_queries):
    """Ensure a customer lists only their own cards, in a paginated body, in few queries."""
    mine = [make_method(ALICE) for _ in range(5)]
    make_method(BOB)
    with django_assert_max_num_queries(2):
        response = api.get(URL, auth=alice_auth)
    body = response.json()
    assert response.status_code == 200 and body["count"] == 5
    assert {item["token"] for item in body["results"]} == {m.token for m in mine}
    assert api.get(URL, auth=bob_auth).json()["count"] == 1


def test_delete_own_method(api, alice_auth, make_method):
    """Ensure a customer removes their card: 204, then it is gone from the list and a second delete is 404."""
    method = make_method(ALICE)
    assert api.delete(f"{URL}{method.token}/", auth=alice_auth).status_code == 204
    assert api.get(URL, auth=alice_auth).json()["count"] == 0
    assert api.delete(f"{URL}{method.token}/", auth=alice_auth).status_code == 404


def test_delete_someone_elses_method_is_404(api, bob_auth, make_method):
    """Ensure another customer's card cannot be removed and looks like it does not exist."""
    method = make_method(ALICE)
    response = api.delete(f"{URL}{method.token}/", auth=bob_auth)
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    method.refresh_from_db()
    assert method.removed_at is None
