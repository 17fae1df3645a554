import logging

import pytest


@pytest.mark.django_db
def test_request_id_is_generated_when_absent(api):
    """Ensure a request without X-Request-ID gets a fresh one on the response."""
    first = api.get("/health/")["X-Request-ID"]
    second = api.get("/health/")["X-Request-ID"]
    assert len(first) == 32 and first != second


@pytest.mark.django_db
def test_request_id_is_echoed(api):
    """Ensure a well-formed incoming id is kept and echoed."""
    assert api.get("/health/", HTTP_X_REQUEST_ID="checkout-42.a")["X-Request-ID"] == "checkout-42.a"


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["x" * 65, "has space", "<script>"])
def test_malformed_request_id_is_replaced(api, bad):
    """Ensure an id that could pollute logs is replaced, not trusted."""
    got = api.get("/health/", HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
    assert got != bad and len(got) == 32


@pytest.mark.django_db
def test_request_id_is_in_log_lines_and_error_bodies(api, caplog):
    """Ensure log records written while serving a request carry its id, and so does the error body."""
    with caplog.at_level(logging.WARNING):
        response = api.get("/no-such-route/", HTTP_X_REQUEST_ID="trace-me-1")
    assert response.json()["request_id"] == "trace-me-1"
    assert any(getattr(r, "request_id", None) == "trace-me-1" for r in caplog.records)
