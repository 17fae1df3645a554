"""The login throttle counts per (email, client): a stranger's guesses do not lock the owner out."""

from __future__ import annotations

import pytest

from chassis.testing import bearer, service_token, user_token

from .helpers import assert_error, login

pytestmark = pytest.mark.django_db

STRANGER, OWNER = "203.0.113.9", "198.51.100.1"


def via_dashboard(client_ip: str) -> dict:
    """What the dashboard sends with a login it forwards: its service token and the browser's address."""
    return {**bearer(service_token(caller="dashboard", audience="user")), "HTTP_X_LAB_CLIENT_IP": client_ip}


def test_a_strangers_failed_logins_do_not_lock_out_the_owner(api, user, settings):
    """Ensure failures from one client lock that client out of the email, not the owner on another client."""
    settings.LOGIN_RATE_PER_ACCOUNT = "3/min"

    answers = [login(api, user.email, "wrong-password", REMOTE_ADDR=STRANGER).status_code for _ in range(5)]

    assert answers == [401, 401, 401, 429, 429]
    assert login(api, user.email, REMOTE_ADDR=OWNER).status_code == 200


def test_every_client_together_meets_the_wider_cap_per_email(api, user, settings):
    """Ensure guesses spread over many addresses still meet LOGIN_RATE_PER_EMAIL."""
    settings.LOGIN_RATE_PER_EMAIL = "4/min"
    for number in range(4):
        assert login(api, user.email, "wrong-password", REMOTE_ADDR=f"203.0.113.{number + 20}").status_code == 401

    assert_error(login(api, user.email, REMOTE_ADDR=OWNER), 429, "throttled")
    assert login(api, "someone-else@example.test", REMOTE_ADDR=OWNER).status_code == 401


def test_logins_forwarded_by_the_dashboard_are_counted_per_browser(api, user, settings):
    """Ensure the dashboard's logins count against the address it forwards, not the dashboard's own."""
    settings.LOGIN_RATE_PER_ACCOUNT = "3/min"

    answers = [login(api, user.email, "wrong-password", **via_dashboard(STRANGER)).status_code for _ in range(4)]

    assert answers == [401, 401, 401, 429]
    assert login(api, user.email, **via_dashboard(OWNER)).status_code == 200


def test_a_forwarded_address_without_a_forwarders_token_is_ignored(api, user, settings):
    """Ensure a client cannot pick its own bucket: X-Lab-Client-IP counts only with a lab service's token."""
    settings.LOGIN_RATE_PER_ACCOUNT = "3/min"
    customer = bearer(user_token(user_id=user.pk))
    tries = [
        {"HTTP_X_LAB_CLIENT_IP": "192.0.2.1"},
        {"HTTP_X_LAB_CLIENT_IP": "192.0.2.2", **customer},
        {**via_dashboard("192.0.2.3"), "HTTP_X_LAB_CLIENT_IP": "not-an-address"},
    ]
    for extra in tries:
        assert login(api, user.email, "wrong-password", REMOTE_ADDR=STRANGER, **extra).status_code == 401

    refused = login(api, user.email, REMOTE_ADDR=STRANGER, HTTP_X_LAB_CLIENT_IP="192.0.2.4")
    assert_error(refused, 429, "throttled")


def test_registrations_are_throttled_per_client_ip(api, settings):
    """Ensure REGISTER_RATE_PER_IP refuses more sign-ups from one address with 429 and Retry-After, not another's."""
    settings.REGISTER_RATE_PER_IP = "2/min"

    def register(number: int, address: str):
        body = {"email": f"new{number}@example.test", "password": "a-fine-passphrase-9", "name": "New"}
        return api.post("/api/auth/register/", body, format="json", REMOTE_ADDR=address)

    assert [register(n, STRANGER).status_code for n in range(3)] == [201, 201, 429]
    refused = register(9, STRANGER)
    assert_error(refused, 429, "throttled")
    assert 0 < int(refused["Retry-After"]) <= 60
    assert register(10, OWNER).status_code == 201
