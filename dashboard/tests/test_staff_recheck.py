"""Staff status is re-checked on every request, not only at login: a demoted session loses the controls."""

from __future__ import annotations

import pytest

from chassis import revocation
from chassis.testing import user_token
from console.auth import SESSION_KEY

from .conftest import staff_session

pytestmark = pytest.mark.django_db

CONTROL = "/faults/clear-all/"


@pytest.fixture(autouse=True)
def _fresh_revocations():
    revocation.clear()
    yield
    revocation.clear()


def staff_with(client, access: str) -> None:
    staff_session(client)
    session = client.session
    session[SESSION_KEY] = {**session[SESSION_KEY], "access": access}
    session.save()


def test_a_demoted_staff_session_loses_the_controls(client, lab):
    """Ensure the controls close within a request of user_service revoking the account's tokens (demotion)."""
    staff_with(client, user_token(user_id=3, email="admin@lab.local", staff=True))
    assert client.post(CONTROL).status_code == 302

    # What user_service records when the account is demoted (accounts.services.user_staff_set).
    revocation.revoke_user(user_id=3, lifetime=900)
    revocation.forget_local()  # as a dashboard worker that did not write it sees it a refresh later

    refused = client.post(CONTROL)
    assert refused.status_code == 403
    assert b"staff" in refused.content
    assert SESSION_KEY not in client.session
    assert len(lab["payment"].sent("DELETE", "/_lab/faults/")) == 1  # only the first, before the demotion
    assert b"Log in" in client.get("/faults/").content


def test_another_staff_members_session_keeps_the_controls(client, lab):
    """Ensure a revocation of one account leaves another staff member's session alone."""
    staff_with(client, user_token(user_id=4, email="other@lab.local", staff=True))
    revocation.revoke_user(user_id=3, lifetime=900)
    revocation.forget_local()

    assert client.post(CONTROL).status_code == 302


def test_a_session_logged_out_elsewhere_loses_the_controls(client, lab):
    """Ensure a session whose login was logged out at user_service (its sid revoked) is closed."""
    staff_with(client, user_token(user_id=3, email="admin@lab.local", staff=True, sid="dash-session"))
    revocation.revoke_session(sid="dash-session", lifetime=900)
    revocation.forget_local()

    assert client.post(CONTROL).status_code == 403


def test_a_refresh_without_staff_ends_the_session(client, lab):
    """Ensure a refreshed token that is no longer staff closes the session instead of being stored."""
    staff_session(client)
    session = client.session
    session[SESSION_KEY] = {**session[SESSION_KEY], "access_exp": 0, "refresh": "old-refresh"}
    session.save()
    lab["user"].on("POST", "/api/auth/refresh/", 200, {"access": user_token(user_id=3, staff=False), "refresh": "r2"})

    response = client.get("/data/")

    assert response.status_code == 302
    assert SESSION_KEY not in client.session
    assert client.post(CONTROL).status_code == 403


def test_the_login_forwards_the_browsers_address(client, lab):
    """Ensure the login sent to user_service names the browser's address, with the dashboard's service token."""
    lab["user"].on("POST", "/api/auth/login/", 200, {"access": user_token(user_id=1, staff=True), "refresh": ""})

    client.post("/login/", {"email": "a@lab.local", "password": "pw"}, REMOTE_ADDR="198.51.100.7")

    [sent] = lab["user"].sent("POST", "/api/auth/login/")
    assert sent["headers"]["X-Lab-Client-IP"] == "198.51.100.7"
    assert sent["headers"]["Authorization"].startswith("Bearer ")
