"""What every lab service offers: health, a valid OpenAPI schema, an idempotent seed, no 500 on garbage."""

import io
import json

import pytest
from django.core.management import call_command

from .conftest import new_key


@pytest.mark.django_db
def test_health_reports_database_and_cache(client):
    """Ensure /health/ answers 200 with the database and cache checks."""
    response = client.get("/health/")
    body = response.json()
    assert response.status_code == 200 and body["service"] == "payment"
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["cache"]["status"] == "ok"


def test_schema_is_valid_without_warnings():
    """Ensure the whole service's OpenAPI schema (chassis routes included) validates, warnings treated as errors."""
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


@pytest.mark.django_db
def test_schema_and_docs_are_served(client):
    """Ensure /api/schema/ and /api/docs/ are reachable and list the payment routes."""
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert {
        "/api/payment-methods/",
        "/internal/charges/",
        "/internal/charges/{charge_id}/refunds/",
        "/internal/settlements/",
    } <= set(paths)
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_seed_lab_is_idempotent_and_prints_one_line():
    """Ensure seed_lab prints the test cards on one line and gives the same answer twice."""
    outputs = []
    for _ in range(2):
        out = io.StringIO()
        call_command("seed_lab", stdout=out)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]
    assert outputs[0].count("\n") == 1 and "4242424242424242" in outputs[0]


GARBAGE = [
    b"",
    b"\x00\x01\x02",
    b"\xff\xfe\xfd",
    b"[]",
    b"123",
    b'{"a": NaN}',
    b'{"card_number": {"$gt": ""}}',
    b'{"amount_cents": 1e999}',
    json.dumps({"order_id": "\u0000", "customer_id": True, "amount_cents": [1]}).encode(),
    b"{" * 5000,
    b"[" * 100_000,
    b'{"a":' * 50_000,
]


@pytest.mark.django_db
@pytest.mark.parametrize("payload", GARBAGE)
def test_garbage_is_never_a_500(client, alice_auth, order_auth, payload):
    """Ensure every write endpoint answers a 4xx to garbage bodies and content types."""
    targets = [
        ("/api/payment-methods/", alice_auth),
        ("/internal/charges/", order_auth),
        ("/internal/charges/00000000-0000-0000-0000-000000000000/refunds/", order_auth),
        ("/internal/settlements/", order_auth),
    ]
    for url, auth in targets:
        for content_type in (
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=xyz",
            "text/plain",
        ):
            response = client.post(url, data=payload, content_type=content_type, HTTP_IDEMPOTENCY_KEY=new_key(), **auth)
            assert 400 <= response.status_code < 500, (url, content_type, response.status_code)
            assert "code" in response.json()


@pytest.mark.django_db
def test_bad_tokens_are_401(client):
    """Ensure malformed, forged and wrong-scheme Authorization headers are a 401 in the chassis format."""
    for header in ("Bearer", "Bearer a b", "Bearer not.a.jwt", "Bearer \u00e9", "Basic Zm9vOmJhcg=="):
        response = client.get("/api/payments/", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401, header
        assert response.json()["code"] in ("authentication_failed", "not_authenticated")


@pytest.mark.django_db
@pytest.mark.parametrize("token", ["%00", "x" * 5000, "pm_%F0%9F%92%B3", "..%2F..%2Fetc"])
def test_odd_tokens_in_paths_are_404(client, alice_auth, token):
    """Ensure odd or oversized tokens in a path are a plain 404."""
    response = client.delete(f"/api/payment-methods/{token}/", **alice_auth)
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_unsupported_methods_are_405(client, alice_auth, order_auth, method):
    """Ensure methods a route does not offer answer 405 in the chassis format."""
    for url, auth in (("/api/payment-methods/", alice_auth), ("/internal/charges/", order_auth)):
        response = getattr(client, method)(url, **auth)
        assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
