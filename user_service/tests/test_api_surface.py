"""What a student meets first: health, the schema, the browsable API, and answers to garbage."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import Address, RefreshToken, User

from .helpers import PASSWORD, client_for

WRITE_ENDPOINTS = [
    ("post", "/api/auth/register/"),
    ("post", "/api/auth/login/"),
    ("post", "/api/auth/refresh/"),
    ("post", "/api/auth/logout/"),
    ("patch", "/api/users/me/"),
    ("post", "/api/users/me/password/"),
    ("post", "/api/users/me/addresses/"),
    ("patch", "/api/users/me/addresses/{address}/"),
]

GARBAGE_JSON = [
    "{",
    "[]",
    "null",
    '"just a string"',
    "12345678901234567890123",
    '{"email": {"$gt": ""}, "password": [], "name": {}}',
    '{"email": "a@b.test", "password": "x\\u0000y", "name": "nul\\u0000byte"}',
    '{"email": "a@b.test", "password": "\\ud800\\udfff-lone-\\ud800", "name": "\\ud800"}',
    '{"name": "' + "é" * 5000 + '", "label": "' + "x" * 5000 + '", "refresh": "' + "r" * 5000 + '"}',
    '{"country": true, "old_password": 1e999, "new_password": -0, "refresh": null, "city": ["a"]}',
    '{"line1": "' + "\\u202e" * 10 + '", "email": "' + "a" * 70 + "@" + "b" * 250 + '.test"}',
    "\xef\xbb\xbf{}",
]


@pytest.mark.django_db
def test_health_reports_database_and_cache(api):
    """Ensure /health/ answers 200 with both checks ok."""
    response = api.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "user" and body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["cache"]["status"] == "ok"


def test_openapi_schema_validates_without_warnings(tmp_path):
    """Ensure the OpenAPI schema generates and validates with warnings treated as errors."""
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stderr=StringIO())
    schema = target.read_text()
    for path in ("/api/auth/login/", "/api/users/me/addresses/{address_id}/", "/api/users/"):
        assert f"  {path}:" in schema


@pytest.mark.django_db
def test_schema_and_docs_are_served(api):
    """Ensure /api/schema/ and /api/docs/ answer."""
    assert api.get("/api/schema/").status_code == 200
    assert api.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_browsable_api_renders_html(api, user):
    """Ensure a browser gets the browsable API: the login form, and a logged-in user's page."""
    page = api.get("/api/auth/login/", HTTP_ACCEPT="text/html")
    assert page.status_code == 405 and page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert "<form" in html and 'name="email"' in html and 'name="password"' in html
    me = client_for(user).get("/api/users/me/", HTTP_ACCEPT="text/html")
    assert me.status_code == 200 and me["Content-Type"].startswith("text/html")
    assert "carol@example.test" in me.content.decode()
    assert client_for(user).get("/api/users/me/addresses/", HTTP_ACCEPT="text/html").status_code == 200


@pytest.mark.django_db
def test_browsable_api_form_logs_in(api, user):
    """Ensure the HTML form's encoding (form data) works for logging in, not only JSON."""
    response = api.post("/api/auth/login/", {"email": user.email, "password": PASSWORD})
    assert response.status_code == 200 and response.json()["access"]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), WRITE_ENDPOINTS)
def test_garbage_never_answers_500_or_writes(method, path, make_user):
    """Ensure every write endpoint answers garbage with a 4xx in the chassis format and writes nothing."""
    owner = make_user(email="owner@example.test")
    address = Address.objects.create(user=owner, label="Home", line1="1 St", city="C", postal_code="1", country="FR")
    client = client_for(owner)
    url = path.format(address=address.pk)
    before = (list(User.objects.values()), list(Address.objects.values()), RefreshToken.objects.count())
    bodies = [(body, "application/json") for body in GARBAGE_JSON] + [
        ("email=a", "text/plain"),
        ("\x00\x01\x02", "application/octet-stream"),
        ("--x\r\nbroken", "multipart/form-data; boundary=x"),
        ("a=%ZZ&email=%00", "application/x-www-form-urlencoded"),
        ("{" * 50000, "application/json"),
        ("[" * 50000 + "]" * 50000, "application/json"),
        ('{"a":' * 20000 + "1" + "}" * 20000, "application/json"),
    ]
    for body, content_type in bodies:
        response = getattr(client, method)(url, data=body, content_type=content_type)
        assert 400 <= response.status_code < 500, (body[:60], response.status_code, response.content[:300])
        assert response.status_code not in (200, 201, 204)
        payload = response.json()
        assert payload["code"] and payload["message"] and payload["request_id"], payload
    after = (list(User.objects.values()), list(Address.objects.values()), RefreshToken.objects.count())
    assert after == before


@pytest.mark.django_db
def test_oversized_body_is_refused(user_client):
    """Ensure a body over the upload limit is a 4xx, not a 500."""
    body = json.dumps({"name": "x" * 300_000})
    response = user_client.patch("/api/users/me/", data=body, content_type="application/json")
    assert 400 <= response.status_code < 500


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer a b",
        "Bearer \u00e9t\u00e9",
        "Bearer " + "a" * 10000,
        "Basic dXNlcjpwYXNz",
        "bearer ...",
        "Token x",
    ],
)
def test_odd_authorization_headers_are_401(api, header):
    """Ensure malformed or foreign Authorization headers are a 401 on a protected endpoint, never a 500."""
    response = api.get("/api/users/me/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401, (header[:30], response.content[:200])
    assert response.json()["code"]


@pytest.mark.django_db
def test_odd_paths_and_queries_are_4xx(user_client):
    """Ensure out-of-range ids and odd query strings are answered as 404/400."""
    assert user_client.get("/api/users/me/addresses/99999999999999999999999999/").status_code == 404
    assert user_client.get("/api/users/me/addresses/-1/").status_code == 404
    assert user_client.get("/api/users/me/addresses/", {"page": "0"}).status_code == 400
    assert user_client.get("/api/nowhere/").json()["code"] == "not_found"
    assert user_client.put("/api/users/me/", {"name": "x"}, format="json").status_code == 405
