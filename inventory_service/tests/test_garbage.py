"""Whatever a client sends, no endpoint answers 500, and the database keeps stock conserved by itself."""

import pytest
from django.db import IntegrityError, transaction
from django.db.models import F

from catalog.models import Stock

from .helpers import assert_stock_conserved

pytestmark = pytest.mark.django_db

GARBAGE = [
    ("application/json", "{"),
    ("application/json", "[1, 2, 3]"),
    ("application/json", "null"),
    ("application/json", '{"lines": [{"sku": {"$gt": ""}, "quantity": [1]}], "order_id": {}, "quantity": {}}'),
    ("application/json", '{"quantity": 1e400, "price_cents": NaN, "name": "\\ud800"}'),
    ("application/json", '{"sku": "KB-001", "name": "x", "price_cents": 99999999999999999999999999999}'),
    ("application/json", '{"lines": ' + "[" * 2000 + "]" * 2000 + "}"),
    ("application/json", "\xff\xfe garbage"),
    ("text/plain", "quantity=5"),
    ("application/x-www-form-urlencoded", "quantity=5&lines=KB-001&order_id=1&idempotency_key=abcdefghij"),
    ("multipart/form-data; boundary=xx", "--xx\r\nbroken"),
    ("application/xml", "<quantity>5</quantity>"),
]


@pytest.fixture
def everything(make_product, client, order_service):
    make_product("KB-001", stock=10)
    response = client.post(
        "/internal/reservations/",
        {"order_id": 1, "idempotency_key": "order-1-reserve", "lines": [{"sku": "KB-001", "quantity": 1}]},
        content_type="application/json",
        **order_service,
    )
    return response.json()["id"]


@pytest.mark.parametrize("content_type, body", GARBAGE)
def test_garbage_never_answers_500(client, everything, staff, order_service, content_type, body):
    """Ensure every write endpoint answers garbage without a 5xx, errors in the chassis format, stock conserved.

    (A well-formed form body is a legitimate request: the browsable API sends those.)
    """
    calls = [
        ("post", "/api/products/", staff),
        ("patch", "/api/products/KB-001/", staff),
        ("post", "/api/products/KB-001/restock/", staff),
        ("post", "/internal/reservations/", order_service),
        ("post", f"/internal/reservations/{everything}/commit/", order_service),
        ("post", f"/internal/reservations/{everything}/release/", order_service),
    ]
    for method, url, headers in calls:
        response = getattr(client, method)(url, body, content_type=content_type, **headers)
        assert response.status_code < 500, (url, response.status_code, response.content[:300])
        if response.status_code >= 400:
            assert response.json()["code"] and response.json()["request_id"], response.content
    assert_stock_conserved()


def test_deeply_nested_json_is_400(client, staff):
    """Ensure JSON nested thousands of levels deep is a 400 parse error, not a 500."""
    body = '{"name": ' + "[" * 5000 + "]" * 5000 + "}"

    response = client.post("/api/products/", body, content_type="application/json", **staff)

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


@pytest.mark.parametrize(
    "url",
    [
        "/api/products/?page=abc",
        "/api/products/?page=-1",
        "/api/products/?page_size=abc",
        "/api/products/?search=%00",
        "/api/products/?sku=%ff%fe",
        "/api/products/%ff/",
        "/api/products/KB-001/movements/?page=0",
        "/internal/reservations/00000000-0000-0000-0000-000000000000/",
        "/nowhere/",
    ],
)
def test_garbage_urls_never_answer_500(client, everything, staff, order_service, url):
    """Ensure odd query strings and paths answer 2xx/4xx."""
    response = client.get(url, **(order_service if url.startswith("/internal/") else staff))

    assert response.status_code < 500, response.content


def test_database_refuses_a_stock_row_that_is_not_conserved(make_product):
    """Ensure the conservation check is enforced by the database, not only by the code."""
    make_product("KB-001", stock=10)

    with pytest.raises(IntegrityError), transaction.atomic():
        Stock.objects.update(available=F("available") + 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Stock.objects.update(available=F("available") - 11, reserved=F("reserved") + 11 - 11)
