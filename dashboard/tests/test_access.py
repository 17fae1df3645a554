"""Who may do what: anonymous visitors watch, only a logged-in staff member changes the lab."""

from __future__ import annotations

import pytest
from django.test import Client

from chassis.testing import service_token, user_token
from console.auth import SESSION_KEY

from .conftest import staff_session

pytestmark = pytest.mark.django_db

CONTROLS = [
    "/faults/payment/add/",
    "/faults/payment/f-1/clear/",
    "/faults/clear-all/",
    "/faults/presets/payment-outage/",
    "/resilience/order/",
    "/resilience/order/reset/",
    "/resilience/saga/",
    "/flows/checkout-sync/run/",
    "/load/start/",
    "/load/20260101-120000-checkout/stop/",
]


@pytest.mark.parametrize("path", CONTROLS)
def test_anonymous_posts_are_refused_and_change_nothing(client, lab, path):
    """Ensure every control answers 403 to an anonymous visitor and no service is called."""
    response = client.post(path, {"kind": "outage", "mode": "async"})
    assert response.status_code == 403
    assert b"staff" in response.content
    changed = [r for fake in lab.values() for r in fake.requests if r["method"] != "GET"]
    assert changed == []


def test_anonymous_visitors_watch_without_controls(client, lab):
    """Ensure with public read on, the pages render for anyone with every control hidden."""
    for path in ("/", "/faults/", "/resilience/", "/flows/", "/traces/", "/audit/", "/load/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert b"Log in" in response.content
    faults = client.get("/faults/").content
    assert b'data-testid="clear-all"' not in faults
    assert b"fault-form" not in faults
    assert b'data-testid="preset-' not in faults
    flows = client.get("/flows/").content
    assert b'data-testid="flow-checkout-sync" disabled' in flows


def test_data_page_tells_a_watcher_it_needs_a_login(client, lab):
    """Ensure the Data page (customers' rows) tells an anonymous visitor why it needs a staff login, reading nothing."""
    response = client.get("/data/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="data-needs-login"' in html and "needs a staff login" in html
    assert 'href="/login/?next=/data/"' in html
    assert "<table" not in html
    assert [r for fake in lab.values() for r in fake.requests if r["path"].startswith("/api/")] == []


def test_without_public_read_everything_needs_a_login(client, lab, settings):
    """Ensure DASHBOARD_PUBLIC_READ=false closes the pages and the read APIs, not the collector."""
    settings.DASHBOARD_PUBLIC_READ = False
    assert client.get("/").status_code == 302
    assert client.get("/partials/overview/", HTTP_HX_REQUEST="true").status_code == 403
    assert client.get("/api/traces/").status_code == 403
    assert client.get("/api/metrics/summary/").status_code == 403
    assert client.get("/login/").status_code == 200
    assert client.get("/health/").status_code == 200
    exporter = {"HTTP_AUTHORIZATION": f"Bearer {service_token(caller='order', audience='dashboard')}"}
    assert client.post("/v1/traces", b"{}", content_type="application/json", **exporter).status_code == 200
    staff_session(client)
    assert client.get("/").status_code == 200


def _login(client, lab, *, staff: bool, status: int = 200):
    token = user_token(user_id=9, email="who@lab.local", staff=staff)
    lab["user"].on(
        "POST",
        "/api/auth/login/",
        status,
        {"access": token, "refresh": "r-1", "token_type": "Bearer", "expires_in": 900}
        if status == 200
        else {"code": "invalid_credentials", "message": "Email or password is wrong."},
    )
    return client.post("/login/", {"email": "who@lab.local", "password": "pw", "next": "/faults/"})


def test_staff_login_opens_a_session(client, lab):
    """Ensure a staff account logs in through user_service and may then use the controls."""
    response = _login(client, lab, staff=True)
    assert response.status_code == 302 and response["Location"] == "/faults/"
    assert lab["user"].sent("POST", "/api/auth/login/")[0]["json"] == {"email": "who@lab.local", "password": "pw"}
    assert client.session[SESSION_KEY]["user"]["email"] == "who@lab.local"
    assert client.post("/faults/presets/payment-outage/").status_code == 302


def test_a_customer_account_is_refused(client, lab):
    """Ensure a valid login without the staff claim opens no session."""
    response = _login(client, lab, staff=False)
    assert response.status_code == 200
    assert b"not staff" in response.content
    assert SESSION_KEY not in client.session
    assert client.post("/faults/clear-all/").status_code == 403


def test_a_wrong_password_shows_the_services_message(client, lab):
    """Ensure the user service's refusal is shown on the form."""
    response = _login(client, lab, staff=True, status=401)
    assert response.status_code == 200
    assert b"Email or password is wrong." in response.content
    assert SESSION_KEY not in client.session


def test_a_forged_token_is_refused(client, lab):
    """Ensure a token that does not verify with the user service's key opens nothing."""
    lab["user"].on(
        "POST", "/api/auth/login/", 200, {"access": "eyJhbGciOiJub25lIn0.eyJzdGFmZiI6dHJ1ZX0.", "refresh": ""}
    )
    response = client.post("/login/", {"email": "x@lab.local", "password": "pw"})
    assert response.status_code == 200
    assert b"could not be verified" in response.content
    assert SESSION_KEY not in client.session


def test_login_with_the_user_service_down(client, dead_lab):
    """Ensure a dead user service gives a clear message, not a 500."""
    response = client.post("/login/", {"email": "a@lab.local", "password": "pw"})
    assert response.status_code == 200
    assert b"user service is unavailable" in response.content


def test_controls_need_the_csrf_token(lab):
    """Ensure a logged-in staff member's browser cannot be made to post from another site."""
    strict = Client(enforce_csrf_checks=True)
    staff_session(strict)
    response = strict.post("/faults/clear-all/")
    assert response.status_code == 403
    assert lab["payment"].sent("DELETE", "/_lab/faults/") == []


def test_logout_ends_the_session(staff, lab):
    """Ensure logging out closes the controls again."""
    assert staff.post("/logout/").status_code == 302
    assert staff.post("/faults/clear-all/").status_code == 403


def test_login_redirect_stays_on_this_site(client, lab):
    """Ensure ?next= cannot send a person to another site after logging in."""
    lab["user"].on("POST", "/api/auth/login/", 200, {"access": user_token(user_id=1, staff=True), "refresh": ""})
    response = client.post("/login/", {"email": "a@lab.local", "password": "pw", "next": "https://evil.example/"})
    assert response["Location"] == "/"
