"""POST /api/auth/login/ and its throttling."""

import pytest
from django.utils import timezone

from accounts.models import RefreshToken
from chassis import auth

from .helpers import assert_error, login


@pytest.mark.django_db
def test_login_issues_access_and_refresh_tokens(api, user):
    """Ensure good credentials give a signed access token (15 min) and a recorded refresh token (7 days)."""
    response = login(api, user.email)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    access = auth.verify(body["access"])
    refresh = auth.verify(body["refresh"])
    assert access["iss"] == "user" and access["typ"] == "access"
    assert access["sub"] == str(user.pk) and access["email"] == user.email
    assert access["name"] == "Carol Test" and access["staff"] is False
    assert access["exp"] - access["iat"] == 15 * 60
    assert refresh["typ"] == "refresh" and refresh["exp"] - refresh["iat"] == 7 * 24 * 3600
    record = RefreshToken.objects.get(jti=refresh["jti"])
    assert record.user_id == user.pk and record.revoked_at is None
    assert abs((record.expires_at - timezone.now()).total_seconds() - 7 * 24 * 3600) < 60
    user.refresh_from_db()
    assert user.last_login is not None
    me = api.get("/api/users/me/", HTTP_AUTHORIZATION=f"Bearer {body['access']}")
    assert me.status_code == 200 and me.json()["id"] == user.pk


@pytest.mark.django_db
def test_login_email_is_case_insensitive(api, user):
    """Ensure the email is matched whatever its case and surrounding spaces."""
    assert login(api, "  CAROL@Example.Test ").status_code == 200


@pytest.mark.django_db
def test_wrong_password_and_unknown_email_answer_alike(api, user):
    """Ensure a wrong password and an unknown email give the same 401 invalid_credentials, with WWW-Authenticate."""
    wrong = assert_error(login(api, user.email, "not-the-password"), 401, "invalid_credentials")
    unknown_response = login(api, "nobody@example.test")
    unknown = assert_error(unknown_response, 401, "invalid_credentials")
    assert wrong["message"] == unknown["message"] == "Email or password is incorrect."
    assert unknown_response["WWW-Authenticate"].startswith("Bearer")
    assert not RefreshToken.objects.exists()


@pytest.mark.django_db
def test_inactive_user_cannot_log_in(api, make_user):
    """Ensure a disabled account cannot log in, and is not told apart from a wrong password."""
    make_user(email="gone@example.test", is_active=False)
    assert_error(login(api, "gone@example.test"), 401, "invalid_credentials")


@pytest.mark.django_db
def test_login_ignores_a_stale_authorization_header(api, user):
    """Ensure a client that still sends an old or broken bearer token can log in."""
    response = login(api, user.email, HTTP_AUTHORIZATION="Bearer expired.or.garbage")
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_login_refuses_bad_input(api):
    """Ensure a missing password, a bad email or malformed JSON is a 400, not a login attempt."""
    assert_error(api.post("/api/auth/login/", {"email": "a@example.test"}, format="json"), 400, "invalid", "password")
    assert_error(login(api, "not-an-email"), 400, "invalid", "email")
    assert_error(api.post("/api/auth/login/", "{", content_type="application/json"), 400, "parse_error")
    assert_error(login(api, "a@example.test", "p" * 129), 400, "invalid", "password")


@pytest.mark.django_db
def test_login_is_throttled_per_account(api, user, settings):
    """Ensure the account limit refuses more attempts on one email, even with the right password, with Retry-After."""
    settings.LOGIN_RATE_PER_ACCOUNT = "3/min"
    for _ in range(3):
        assert login(api, user.email, "wrong-password").status_code == 401
    response = login(api, "CAROL@example.test")
    body = assert_error(response, 429, "throttled")
    assert 0 < int(response["Retry-After"]) <= 60
    assert "throttled" in body["message"].lower()
    # Another account from the same address is not affected.
    assert login(api, "someone-else@example.test").status_code == 401


@pytest.mark.django_db
def test_login_is_throttled_per_ip(api, settings):
    """Ensure the per-IP limit counts attempts on any email, and a forged X-Forwarded-For does not escape it."""
    settings.LOGIN_RATE_PER_IP = "3/min"
    for number in range(3):
        assert login(api, f"guess{number}@example.test").status_code == 401
    assert_error(login(api, "guess9@example.test"), 429, "throttled")
    assert_error(login(api, "guess10@example.test", HTTP_X_FORWARDED_FOR="203.0.113.7"), 429, "throttled")
    assert login(api, "guess11@example.test", REMOTE_ADDR="198.51.100.20").status_code == 401
