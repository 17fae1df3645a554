import pytest


def test_validation_error_has_fields_and_message(api):
    """Ensure a 400 names each bad field in the shared error format."""
    response = api.post("/echo/", {"name": "x" * 11, "quantity": 0}, format="json")
    body = response.json()
    assert response.status_code == 400
    assert body["code"] == "invalid"
    assert set(body["fields"]) == {"name", "quantity"}
    assert body["message"].startswith("Invalid input.")
    assert body["request_id"]


def test_malformed_json_is_a_400(api):
    """Ensure a body that is not JSON is a 400 parse_error, not a 500."""
    response = api.post("/echo/", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


@pytest.mark.parametrize("payload", ["[1,2]", '"text"', "null", '{"name": {"a": 1}, "quantity": "many"}'])
def test_wrong_shapes_are_400(api, payload):
    """Ensure JSON of the wrong shape is refused with 400."""
    response = api.post("/echo/", data=payload, content_type="application/json")
    assert response.status_code == 400, response.content


def test_service_error_keeps_status_code_and_fields(api):
    """Ensure a business refusal keeps its status, code and fields."""
    response = api.post("/conflict/")
    assert response.status_code == 409
    assert response.json()["code"] == "insufficient_stock"
    assert response.json()["fields"] == {"sku": ["X"]}


def test_database_error_in_api_view_is_503(api):
    """Ensure a database outage inside a DRF view is a 503, not a traceback."""
    response = api.get("/broken-db/")
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"


def test_database_error_in_plain_view_is_503(client):
    """Ensure the middleware catches database errors outside DRF too."""
    response = client.get("/broken-plain/")
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"


def test_unknown_route_is_json_404(client):
    """Ensure an unknown URL answers the JSON error format."""
    response = client.get("/nowhere/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_method_not_allowed_is_405(api):
    """Ensure a wrong method is a 405 in the shared format."""
    response = api.delete("/echo/")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_deeply_nested_json_is_a_400(api):
    """Ensure JSON nested deep enough to exhaust the parser's stack is a 400, not a 500."""
    response = api.post("/echo/", data="[" * 100000, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_schema_generates_without_warnings(tmp_path):
    """Ensure the routes every service inherits from the chassis make a valid schema without warnings."""
    from django.core.management import call_command

    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--urlconf",
        "tests.chassis_only_urls",
        "--file",
        str(tmp_path / "schema.yml"),
    )


def test_django_http404_keeps_the_not_found_code(api):
    """Ensure get_object_or_404 in a DRF view gives code not_found, not a generic one."""
    response = api.get("/missing-object/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_missing_trailing_slash_is_a_404_with_a_hint(client):
    """Ensure a POST without the trailing slash is not redirected (losing its body) but told the right URL."""
    response = client.post("/echo", {"name": "a", "quantity": 1}, content_type="application/json")
    assert response.status_code == 404
    assert "/echo/" in response.json()["message"]


def test_application_error_status_is_chosen_by_its_kind(api):
    """Ensure a PaymentDeclined is a 402 with its code, extra keys and headers in the shared format."""
    response = api.post("/declined/")
    body = response.json()
    assert response.status_code == 402
    assert body["code"] == "insufficient_funds"
    assert body["message"] == "The card was declined."
    assert body["charge"] == {"id": 1}
    assert body["request_id"]
    assert response["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        ("InvalidRequest", 400, "invalid"),
        ("PaymentDeclined", 402, "card_declined"),
        ("Forbidden", 403, "permission_denied"),
        ("NotFound", 404, "not_found"),
        ("Conflict", 409, "conflict"),
        ("IdempotencyConflict", 409, "idempotency_conflict"),
        ("Unavailable", 503, "unavailable"),
    ],
)
def test_each_application_error_has_one_status(error, status, code):
    """Ensure every application error maps to its HTTP status, in the handler only."""
    from chassis import errors

    exc = getattr(errors, error)()
    response = errors.exception_handler(exc, {})
    assert response.status_code == status
    assert response.data["code"] == code
    assert "fields" not in response.data
