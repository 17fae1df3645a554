"""Refresh rotation, reuse detection, logout, and tokens that must be refused."""

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import RefreshToken
from chassis import auth, keys
from chassis.testing import bearer, service_token, sign_as, user_token

from .helpers import assert_error, login

REFRESH = "/api/auth/refresh/"
LOGOUT = "/api/auth/logout/"
ME = "/api/users/me/"


def refresh(client, token):
    return client.post(REFRESH, {"refresh": token}, format="json")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict, header: dict) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


def claims_for(user, kind="access", **extra) -> dict:
    now = int(time.time())
    return {
        "iss": "user",
        "typ": kind,
        "sub": str(user.pk),
        "email": user.email,
        "name": user.name,
        "staff": True,
        "jti": "f" * 32,
        "iat": now,
        "exp": now + 600,
        **extra,
    }


@pytest.fixture
def pair(api, user):
    response = login(api, user.email)
    assert response.status_code == 200
    return response.json()


# --- refresh ------------------------------------------------------------------------


@pytest.mark.django_db
def test_refresh_rotates_the_pair(api, user, pair):
    """Ensure a refresh answers a new working pair and revokes the refresh token it was given."""
    response = refresh(api, pair["refresh"])
    assert response.status_code == 200, response.content
    new = response.json()
    assert new["refresh"] != pair["refresh"] and new["token_type"] == "Bearer"
    old_jti = auth.verify(pair["refresh"])["jti"]
    assert RefreshToken.objects.get(jti=old_jti).revoked_at is not None
    assert RefreshToken.objects.get(jti=auth.verify(new["refresh"])["jti"]).revoked_at is None
    assert api.get(ME, **bearer(new["access"])).status_code == 200
    assert refresh(api, new["refresh"]).status_code == 200


@pytest.mark.django_db
def test_refresh_carries_the_current_profile(api, user, pair):
    """Ensure a refreshed access token carries the name as it is now, not as it was at login."""
    user.name = "Carol Renamed"
    user.save()
    new = refresh(api, pair["refresh"]).json()
    assert auth.verify(new["access"])["name"] == "Carol Renamed"


@pytest.mark.django_db
def test_reused_refresh_token_revokes_every_session(api, user, pair):
    """Ensure a refresh token presented twice is a 401 token_reused and revokes all of the user's refresh tokens."""
    other_device = login(api, user.email).json()
    rotated = refresh(api, pair["refresh"]).json()
    assert_error(refresh(api, pair["refresh"]), 401, "token_reused")
    assert not RefreshToken.objects.filter(user=user, revoked_at__isnull=True).exists()
    assert_error(refresh(api, rotated["refresh"]), 401, "token_reused")
    assert_error(refresh(api, other_device["refresh"]), 401, "token_reused")
    assert login(api, user.email).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_concurrent_refresh_with_one_token_succeeds_once(user):
    """Ensure two simultaneous refreshes with the same token cannot both get a new pair."""
    token = login(APIClient(), user.email).json()["refresh"]
    barrier = threading.Barrier(2)
    statuses = []

    def attempt():
        try:
            barrier.wait()
            statuses.append(refresh(APIClient(), token).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 401]


@pytest.mark.django_db
def test_access_token_is_not_a_refresh_token(api, pair):
    """Ensure an access token sent to the refresh endpoint is a 401 and opens no session."""
    before = RefreshToken.objects.count()
    assert_error(refresh(api, pair["access"]), 401, "invalid_token")
    assert RefreshToken.objects.count() == before


@pytest.mark.django_db
def test_refresh_token_is_not_an_access_token(api, pair):
    """Ensure a refresh token used as a bearer token is a 401."""
    assert_error(api.get(ME, **bearer(pair["refresh"])), 401, "authentication_failed")


@pytest.mark.django_db
def test_service_token_is_not_a_refresh_token(api):
    """Ensure a token signed by another service, even typed refresh, is refused."""
    assert_error(refresh(api, service_token(caller="order", audience="user")), 401, "invalid_token")
    forged = sign_as("order", {"typ": "refresh", "sub": "1", "jti": "a" * 32, "exp": int(time.time()) + 60})
    assert_error(refresh(api, forged), 401, "invalid_token")


@pytest.mark.django_db
def test_expired_refresh_token_is_refused(api, user, monkeypatch):
    """Ensure a refresh token issued more than 7 days ago is a 401 token_expired."""
    monkeypatch.setattr(tokens, "clock", lambda: time.time() - 8 * 24 * 3600)
    old = login(api, user.email).json()
    monkeypatch.undo()
    assert_error(refresh(api, old["refresh"]), 401, "token_expired")


@pytest.mark.django_db
def test_refresh_token_past_its_recorded_expiry_is_refused(api, pair):
    """Ensure the recorded expiry is enforced too (it wins when the lifetime was shortened)."""
    RefreshToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_error(refresh(api, pair["refresh"]), 401, "token_expired")


@pytest.mark.django_db
def test_unrecorded_refresh_token_is_refused(api, user):
    """Ensure a correctly signed refresh token that this service never recorded is refused."""
    token = auth.sign(claims_for(user, "refresh", jti="0" * 32), issuer="user")
    assert_error(refresh(api, token), 401, "invalid_token")
    huge_sub = auth.sign(claims_for(user, "refresh", sub="9" * 30), issuer="user")
    assert_error(refresh(api, huge_sub), 401, "invalid_token")


@pytest.mark.django_db
def test_inactive_user_cannot_refresh(api, user, pair):
    """Ensure a disabled account's refresh token no longer gives tokens."""
    user.is_active = False
    user.save()
    assert_error(refresh(api, pair["refresh"]), 401, "account_unavailable")


@pytest.mark.django_db
def test_refresh_refuses_bad_input(api):
    """Ensure a missing, empty, non-string or over-long refresh field is a 400."""
    assert_error(api.post(REFRESH, {}, format="json"), 400, "invalid", "refresh")
    assert_error(refresh(api, ""), 400, "invalid", "refresh")
    assert_error(refresh(api, ["a"]), 400, "invalid", "refresh")
    assert_error(refresh(api, "a" * 2049), 400, "invalid", "refresh")
    assert_error(refresh(api, "not.a.jwt"), 401, "invalid_token")


# --- logout -------------------------------------------------------------------------


@pytest.mark.django_db
def test_logout_revokes_the_refresh_token(api, user, pair):
    """Ensure logout answers 204, revokes that refresh token only, and is idempotent."""
    other_device = login(api, user.email).json()
    response = api.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")
    assert response.status_code == 204 and not response.content
    assert RefreshToken.objects.get(jti=auth.verify(pair["refresh"])["jti"]).revoked_at is not None
    assert RefreshToken.objects.get(jti=auth.verify(other_device["refresh"])["jti"]).revoked_at is None
    assert api.post(LOGOUT, {"refresh": pair["refresh"]}, format="json").status_code == 204
    assert_error(refresh(api, pair["refresh"]), 401, "token_reused")


@pytest.mark.django_db
def test_logout_refuses_bad_tokens(api, pair):
    """Ensure logout with an access token, garbage or no token is refused and revokes nothing."""
    assert_error(api.post(LOGOUT, {"refresh": pair["access"]}, format="json"), 401, "invalid_token")
    assert_error(api.post(LOGOUT, {"refresh": "garbage"}, format="json"), 401, "invalid_token")
    assert_error(api.post(LOGOUT, {}, format="json"), 400, "invalid", "refresh")
    assert not RefreshToken.objects.filter(revoked_at__isnull=False).exists()


# --- forged access tokens -------------------------------------------------------------


@pytest.mark.django_db
def test_expired_access_token_is_refused(api, user):
    """Ensure an access token past its expiry (beyond the 5 s leeway) is a 401."""
    token = user_token(user_id=user.pk, ttl=-60)
    body = assert_error(api.get(ME, **bearer(token)), 401, "authentication_failed")
    assert "expired" in body["message"].lower()


@pytest.mark.django_db
def test_tampered_access_token_is_refused(api, user):
    """Ensure a changed signature, or claims changed under a valid signature, are refused."""
    header, payload, signature = user_token(user_id=user.pk).split(".")
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    assert_error(api.get(ME, **bearer(f"{header}.{payload}.{flipped}")), 401, "authentication_failed")
    escalated = b64(json.dumps(claims_for(user)).encode())
    assert_error(api.get(ME, **bearer(f"{header}.{escalated}.{signature}")), 401, "authentication_failed")


@pytest.mark.django_db
def test_alg_none_token_is_refused(api, user):
    """Ensure an unsigned token (alg none) is refused as access and as refresh token."""
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "None"}):
        assert_error(api.get(ME, **bearer(unsigned(claims_for(user), header) + ".")), 401, "authentication_failed")
        assert_error(refresh(api, unsigned(claims_for(user, "refresh"), header) + "."), 401, "invalid_token")


@pytest.mark.django_db
def test_hmac_token_keyed_with_the_public_key_is_refused(api, user):
    """Ensure the key-confusion forgery (HS256 with the public key PEM as secret) is refused."""
    secret = keys.public_path(settings.CHASSIS["KEYS_DIR"], "user").read_bytes()
    for kind in ("access", "refresh"):
        head_and_body = unsigned(claims_for(user, kind), {"alg": "HS256", "typ": "JWT"})
        signature = b64(hmac.new(secret, head_and_body.encode(), hashlib.sha256).digest())
        token = f"{head_and_body}.{signature}"
        if kind == "access":
            assert_error(api.get(ME, **bearer(token)), 401, "authentication_failed")
        else:
            assert_error(refresh(api, token), 401, "invalid_token")


@pytest.mark.django_db
def test_user_claims_signed_by_another_service_are_refused(api, user):
    """Ensure a service's key cannot mint user tokens, under its own name or the user service's."""
    own_name = sign_as("order", {**claims_for(user)})
    assert_error(api.get(ME, **bearer(own_name)), 401, "authentication_failed")
    header, payload, _ = user_token(user_id=user.pk).split(".")
    signature = sign_as("order", claims_for(user)).split(".")[2]
    assert_error(api.get(ME, **bearer(f"{header}.{payload}.{signature}")), 401, "authentication_failed")
