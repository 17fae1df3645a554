"""The internal reservation API used by order_service's checkout saga."""

import json
import uuid

import pytest
from django.utils import timezone

from catalog.models import Reservation, StockMovement
from chassis.testing import bearer, service_token

from .helpers import assert_stock_conserved, snapshot, stock_of

pytestmark = pytest.mark.django_db

URL = "/internal/reservations/"


def reserve(client, headers, lines, *, key="order-1-reserve", order_id=1, **extra):
    body = {"order_id": order_id, "idempotency_key": key, "lines": lines, **extra}
    return client.post(URL, json.dumps(body), content_type="application/json", **headers)


def act(client, headers, reservation_id, action):
    return client.post(f"{URL}{reservation_id}/{action}/", "{}", content_type="application/json", **headers)


def counters(sku):
    stock = stock_of(sku)
    return stock.available, stock.reserved, stock.sold


@pytest.fixture
def shop(make_product):
    make_product("KB-001", stock=10, price_cents=8900)
    make_product("MS-001", stock=5, price_cents=2400)


# --- reserve ----------------------------------------------------------------------------


def test_reserve_holds_stock_and_answers_the_reservation(client, order_service, shop):
    """Ensure a reservation moves units from available to reserved, with prices, total and RESERVE movements."""
    before = timezone.now()
    response = reserve(
        client,
        order_service,
        [{"sku": "KB-001", "quantity": 2}, {"sku": "ms-001", "quantity": 1}],
        order_id=42,
        ttl_seconds=60,
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["order_id"], body["status"], body["total_cents"], body["currency"]) == ("42", "HELD", 20200, "EUR")
    assert body["lines"] == [
        {"sku": "KB-001", "name": "Product KB-001", "quantity": 2, "unit_price_cents": 8900, "currency": "EUR"},
        {"sku": "MS-001", "name": "Product MS-001", "quantity": 1, "unit_price_cents": 2400, "currency": "EUR"},
    ]
    expires_at = Reservation.objects.get().expires_at
    assert 55 <= (expires_at - before).total_seconds() <= 65
    assert counters("KB-001") == (8, 2, 0) and counters("MS-001") == (4, 1, 0)
    assert sorted(StockMovement.objects.filter(kind="RESERVE").values_list("quantity", flat=True)) == [1, 2]
    assert_stock_conserved()


def test_default_ttl_is_fifteen_minutes(client, order_service, shop):
    """Ensure a reservation without ttl_seconds is held for 900 s."""
    response = reserve(client, order_service, [{"sku": "KB-001", "quantity": 1}])

    reservation = Reservation.objects.get(pk=response.json()["id"])
    assert round((reservation.expires_at - reservation.created_at).total_seconds()) == 900


def test_replay_returns_the_same_reservation_without_reserving_twice(client, order_service, shop):
    """Ensure the same key with the same lines answers 200 and the first reservation, reserving nothing more."""
    first = reserve(client, order_service, [{"sku": "KB-001", "quantity": 3}])
    replay = reserve(client, order_service, [{"sku": "KB-001", "quantity": 3}])

    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json()["id"] == first.json()["id"]
    assert counters("KB-001") == (7, 3, 0)
    assert Reservation.objects.count() == 1


def test_replay_with_key_in_header_only(client, order_service, shop):
    """Ensure the key may come as the Idempotency-Key header instead of the body."""
    body = json.dumps({"order_id": 7, "lines": [{"sku": "KB-001", "quantity": 1}]})
    headers = {**order_service, "HTTP_IDEMPOTENCY_KEY": "order-7-reserve"}

    first = client.post(URL, body, content_type="application/json", **headers)
    again = client.post(URL, body, content_type="application/json", **headers)

    assert (first.status_code, again.status_code) == (201, 200)
    assert counters("KB-001") == (9, 1, 0)


def test_header_and_body_keys_must_agree(client, order_service, shop):
    """Ensure two different keys in header and body answer 400."""
    response = client.post(
        URL,
        json.dumps({"order_id": 7, "idempotency_key": "key-in-body", "lines": [{"sku": "KB-001", "quantity": 1}]}),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="key-in-header",
        **order_service,
    )

    assert response.status_code == 400
    assert "idempotency_key" in response.json()["fields"]


@pytest.mark.parametrize(
    "second",
    [
        {"lines": [{"sku": "KB-001", "quantity": 4}]},
        {"lines": [{"sku": "MS-001", "quantity": 3}]},
        {"lines": [{"sku": "KB-001", "quantity": 3}], "order_id": 2},
    ],
)
def test_same_key_different_request_is_409_conflict(client, order_service, shop, second):
    """Ensure a key reused for other lines or another order answers 409 idempotency_conflict, changing nothing."""
    reserve(client, order_service, [{"sku": "KB-001", "quantity": 3}])
    before = snapshot()

    response = reserve(client, order_service, **{"lines": second["lines"], "order_id": second.get("order_id", 1)})

    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"
    assert snapshot() == before


def test_duplicate_skus_are_merged(client, order_service, shop):
    """Ensure lines naming the same sku become one line with the summed quantity."""
    response = reserve(client, order_service, [{"sku": "KB-001", "quantity": 2}, {"sku": "kb-001", "quantity": 3}])

    assert response.status_code == 201
    assert [(line["sku"], line["quantity"]) for line in response.json()["lines"]] == [("KB-001", 5)]
    assert counters("KB-001") == (5, 5, 0)


def test_insufficient_stock_is_409_naming_the_skus_and_changes_nothing(client, order_service, shop):
    """Ensure a reservation short on any line reserves nothing and says which skus and how many are left."""
    before = snapshot()

    response = reserve(client, order_service, [{"sku": "KB-001", "quantity": 2}, {"sku": "MS-001", "quantity": 6}])

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "insufficient_stock"
    assert body["fields"]["lines"] == ["MS-001: 6 requested, 5 available."]
    assert body["shortages"] == [{"sku": "MS-001", "requested": 6, "available": 5}]
    assert snapshot() == before


def test_after_a_refusal_the_same_key_can_succeed(client, order_service, make_product, staff):
    """Ensure a refused attempt does not burn its key: after a restock, the same request succeeds."""
    make_product("KB-001", stock=1)
    assert reserve(client, order_service, [{"sku": "KB-001", "quantity": 2}]).status_code == 409
    client.post("/api/products/KB-001/restock/", {"quantity": 1}, content_type="application/json", **staff)

    assert reserve(client, order_service, [{"sku": "KB-001", "quantity": 2}]).status_code == 201


@pytest.mark.parametrize("sku", ["ZZ-999", "CB-001"])
def test_unknown_or_inactive_sku_is_400_naming_it(client, order_service, shop, make_product, sku):
    """Ensure an unknown or inactive sku answers 400 unknown_sku naming it, and nothing is reserved."""
    make_product("CB-001", active=False)
    before = snapshot()

    response = reserve(client, order_service, [{"sku": "KB-001", "quantity": 1}, {"sku": sku, "quantity": 1}])

    assert response.status_code == 400
    assert response.json()["code"] == "unknown_sku"
    assert response.json()["skus"] == [sku]
    assert sku in response.json()["fields"]["lines"][0]
    assert snapshot() == before


def test_mixed_currencies_are_refused(client, order_service, shop, make_product):
    """Ensure one reservation cannot add up prices in two currencies."""
    make_product("US-001", currency="USD")

    response = reserve(client, order_service, [{"sku": "KB-001", "quantity": 1}, {"sku": "US-001", "quantity": 1}])

    assert response.status_code == 400
    assert response.json()["code"] == "mixed_currency"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"lines": []}, "lines"),
        ({"lines": [{"sku": "KB-001", "quantity": 1}] * 51}, "lines"),
        ({"lines": [{"sku": "KB-001", "quantity": 0}]}, "lines"),
        ({"lines": [{"sku": "KB-001", "quantity": 1001}]}, "lines"),
        ({"lines": [{"sku": "KB-001", "quantity": "2"}], "ttl_seconds": 9}, "ttl_seconds"),
        ({"lines": [{"sku": "KB-001", "quantity": 1}], "ttl_seconds": 3601}, "ttl_seconds"),
        ({"lines": [{"sku": "KB 001", "quantity": 1}]}, "lines"),
        ({"lines": [{"quantity": 1}]}, "lines"),
        ({"lines": [{"sku": "KB-001"}]}, "lines"),
        ({"lines": "KB-001"}, "lines"),
        ({"lines": [["KB-001", 1]]}, "lines"),
        ({"lines": [{"sku": "KB-001", "quantity": 1}], "order_id": ""}, "order_id"),
        ({"lines": [{"sku": "KB-001", "quantity": 1}], "order_id": "x" * 65}, "order_id"),
        ({"lines": [{"sku": "KB-001", "quantity": 1}], "order_id": 1.5}, "order_id"),
        ({"lines": [{"sku": "KB-001", "quantity": 1}], "order_id": True}, "order_id"),
        ({"lines": [{"sku": "KB-001", "quantity": 1}], "idempotency_key": "short"}, "idempotency_key"),
        ({"lines": [{"sku": "KB-001", "quantity": 1}], "idempotency_key": "k" * 129}, "idempotency_key"),
        ({"lines": [{"sku": "KB-001", "quantity": 1}], "idempotency_key": "has spaces in it"}, "idempotency_key"),
        ({"lines": [{"sku": "KB-001", "quantity": 1}], "idempotency_key": None}, "idempotency_key"),
    ],
)
def test_invalid_reservation_is_400_and_reserves_nothing(client, order_service, shop, body, field):
    """Ensure malformed reservation requests answer 400 naming the field, and nothing changes."""
    before = snapshot()
    full = {"order_id": 1, "idempotency_key": "order-1-reserve", **body}

    response = client.post(URL, json.dumps(full), content_type="application/json", **order_service)

    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert snapshot() == before


# --- commit / release -------------------------------------------------------------------


@pytest.fixture
def held(client, order_service, shop):
    response = reserve(client, order_service, [{"sku": "KB-001", "quantity": 2}, {"sku": "MS-001", "quantity": 1}])
    return response.json()["id"]


def test_commit_sells_the_reserved_units_and_is_idempotent(client, order_service, held):
    """Ensure commit moves reserved to sold with COMMIT movements, and a second commit changes nothing."""
    first = act(client, order_service, held, "commit")
    movements = StockMovement.objects.count()
    second = act(client, order_service, held, "commit")

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["status"] == second.json()["status"] == "COMMITTED"
    assert counters("KB-001") == (8, 0, 2) and counters("MS-001") == (4, 0, 1)
    assert StockMovement.objects.filter(kind="COMMIT").count() == 2
    assert StockMovement.objects.count() == movements
    assert_stock_conserved()


def test_release_of_held_gives_units_back_and_is_idempotent(client, order_service, held):
    """Ensure release moves reserved back to available (RELEASE movements); releasing again changes nothing."""
    first = act(client, order_service, held, "release")
    before = snapshot()
    second = act(client, order_service, held, "release")

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["status"] == "RELEASED"
    assert counters("KB-001") == (10, 0, 0)
    assert StockMovement.objects.filter(kind="RELEASE").count() == 2
    assert snapshot() == before
    assert_stock_conserved()


def test_release_of_committed_returns_the_sold_units(client, order_service, held):
    """Ensure releasing a committed reservation returns sold units to available (RETURNED, RETURN movements)."""
    act(client, order_service, held, "commit")

    response = act(client, order_service, held, "release")
    again = act(client, order_service, held, "release")

    assert response.json()["status"] == again.json()["status"] == "RETURNED"
    assert counters("KB-001") == (10, 0, 0) and counters("MS-001") == (5, 0, 0)
    assert StockMovement.objects.filter(kind="RETURN").count() == 2
    assert_stock_conserved()


@pytest.mark.parametrize("first", ["release", "commit-release"])
def test_commit_after_release_or_return_is_409(client, order_service, held, first):
    """Ensure a released or returned reservation cannot be committed, and nothing changes."""
    for action in first.split("-"):
        act(client, order_service, held, action)
    before = snapshot()

    response = act(client, order_service, held, "commit")

    assert response.status_code == 409
    assert response.json()["code"] == "reservation_not_held"
    assert snapshot() == before


def test_get_reservation(client, order_service, held):
    """Ensure order_service can read a reservation with its lines and total, in a fixed number of queries."""
    response = client.get(f"{URL}{held}/", **order_service)

    assert response.status_code == 200
    assert response.json()["id"] == held
    assert response.json()["total_cents"] == 2 * 8900 + 2400


@pytest.mark.parametrize("action", ["", "commit/", "release/"])
def test_unknown_reservation_is_404(client, order_service, action):
    """Ensure an unknown or malformed reservation id answers 404."""
    for reservation_id in (uuid.uuid4(), "not-a-uuid"):
        method = client.get if not action else client.post
        response = method(f"{URL}{reservation_id}/{action}", **order_service)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


# --- who may call -----------------------------------------------------------------------


@pytest.mark.parametrize("action, status", [("create", 201), ("get", 200), ("commit", 200), ("release", 200)])
def test_internal_endpoints_accept_order_service_only(
    client, held, customer, staff, payment_service, order_service, action, status
):
    """Ensure /internal/ answers 401 without a token and 403 to users, staff and other services, changing nothing."""
    before = snapshot()

    def call(headers):
        if action == "create":
            return reserve(client, headers, [{"sku": "KB-001", "quantity": 1}], key="other-key-123")
        if action == "get":
            return client.get(f"{URL}{held}/", **headers)
        return act(client, headers, held, action)

    assert call({}).status_code == 401
    assert call(customer).status_code == 403
    assert call(staff).status_code == 403
    assert call(payment_service).status_code == 403
    assert call(bearer(service_token(caller="order", audience="payment"))).status_code == 401
    assert snapshot() == before
    response = call(order_service)
    assert response.status_code == status, response.content[:300]


def test_performance_reserve_uses_few_queries(client, order_service, make_product, django_assert_max_num_queries):
    """Ensure reserving 20 lines costs the same 11 statements (savepoints included) as reserving one."""
    for i in range(20):
        make_product(f"KB-{i:03}", stock=5)
    lines = [{"sku": f"KB-{i:03}", "quantity": 1} for i in range(20)]

    with django_assert_max_num_queries(11):
        response = reserve(client, order_service, lines)

    assert response.status_code == 201
    assert_stock_conserved()
