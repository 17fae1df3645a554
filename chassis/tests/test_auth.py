import base64
import json
import time

import jwt
import pytest
from django.conf import settings

from chassis import auth, keys
from chassis.testing import bearer, peer_keys_dir, service_token, sign_as, user_token


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_user_token_authenticates_as_lab_user(api):
    """Ensure a user_service access token gives a LabUser with its claims."""
    response = api.get("/whoami/", **bearer(user_token(user_id=7, email="alice@lab.local")))
    assert response.status_code == 200
    assert response.json() == {"id": 7, "email": "alice@lab.local", "staff": False}


def test_anonymous_is_401_with_bearer_challenge(api):
    """Ensure no token at a user endpoint is a 401 asking for a bearer token."""
    response = api.get("/whoami/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_staff_endpoint_refuses_customers(api):
    """Ensure a customer token at a staff endpoint is a 403 and a staff token passes."""
    assert api.get("/staff/", **bearer(user_token(user_id=1))).status_code == 403
    assert api.get("/staff/", **bearer(user_token(user_id=2, staff=True))).status_code == 200


def test_expired_token_is_401(api):
    """Ensure an expired token is refused."""
    response = api.get("/whoami/", **bearer(user_token(user_id=1, ttl=-60)))
    assert response.status_code == 401
    assert "expired" in response.json()["message"]


def test_tampered_token_is_401(api):
    """Ensure changing the payload breaks the signature."""
    header, _payload, signature = user_token(user_id=1).split(".")
    forged_payload = _b64(
        {"iss": "user", "typ": "access", "sub": "1", "staff": True, "iat": 1, "exp": int(time.time()) + 60}
    )
    response = api.get("/staff/", **bearer(f"{header}.{forged_payload}.{signature}"))
    assert response.status_code == 401


def test_alg_none_is_refused(api):
    """Ensure an unsigned token (alg none) is refused."""
    claims = {"iss": "user", "typ": "access", "sub": "1", "staff": True, "iat": 1, "exp": int(time.time()) + 60}
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    assert api.get("/whoami/", **bearer(token)).status_code == 401


def test_hs256_signed_with_public_key_is_refused(api):
    """Ensure the classic key-confusion attack (HMAC keyed with the public PEM) fails."""
    user_token(user_id=1)  # user's public key in this service's keys dir
    public_pem = keys.public_path(settings.CHASSIS["KEYS_DIR"], "user").read_text()
    claims = {"iss": "user", "typ": "access", "sub": "1", "staff": True, "iat": 1, "exp": int(time.time()) + 60}
    header = _b64({"alg": "HS256", "typ": "JWT"})
    import hashlib
    import hmac

    signing_input = f"{header}.{_b64(claims)}"
    signature = (
        base64.urlsafe_b64encode(hmac.new(public_pem.encode(), signing_input.encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    assert api.get("/whoami/", **bearer(f"{signing_input}.{signature}")).status_code == 401


def test_token_signed_by_another_services_key_is_refused(api):
    """Ensure a token claiming iss=user but signed with the order key is refused."""
    service_token(caller="order", audience="inventory")  # order's pair, made for the test
    key = keys.load_private_key(str(peer_keys_dir("order")), "order")
    claims = {"iss": "user", "typ": "access", "sub": "1", "iat": 1, "exp": int(time.time()) + 60}
    assert api.get("/whoami/", **bearer(jwt.encode(claims, key, algorithm="EdDSA"))).status_code == 401


def test_refresh_token_is_not_an_access_token(api):
    """Ensure a refresh token cannot be used to call an API."""
    token = sign_as("user", {"typ": "refresh", "sub": "1", "exp": int(time.time()) + 60})
    assert api.get("/whoami/", **bearer(token)).status_code == 401


def test_unknown_issuer_is_refused(api):
    """Ensure a token from an issuer the lab does not know is refused."""
    service_token(caller="order", audience="inventory")
    key = keys.load_private_key(str(peer_keys_dir("order")), "order")
    claims = {"iss": "mallory", "typ": "access", "sub": "1", "iat": 1, "exp": int(time.time()) + 60}
    assert api.get("/whoami/", **bearer(jwt.encode(claims, key, algorithm="EdDSA"))).status_code == 401


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer not-a-jwt", "Bearer \u00e9t\u00e9"])
def test_malformed_authorization_is_401(api, header):
    """Ensure garbage in the Authorization header is a 401, never a 500."""
    assert api.get("/whoami/", HTTP_AUTHORIZATION=header).status_code == 401


def test_internal_endpoint_accepts_only_listed_callers(api):
    """Ensure a service token from the allowed caller passes, another caller and users get 403."""
    ok = api.get("/internal/", **bearer(service_token(caller="order", audience="inventory")))
    assert ok.status_code == 200 and ok.json() == {"caller": "order"}
    assert api.get("/internal/", **bearer(service_token(caller="payment", audience="inventory"))).status_code == 403
    assert api.get("/internal/", **bearer(user_token(user_id=1, staff=True))).status_code == 403
    assert api.get("/internal/").status_code == 401


def test_service_token_for_another_audience_is_refused(api):
    """Ensure a token order minted for payment cannot be replayed against inventory."""
    assert api.get("/internal/", **bearer(service_token(caller="order", audience="payment"))).status_code == 401


@pytest.mark.parametrize(
    "iat_offset, ttl, why",
    [
        (0, 365 * 24 * 3600, "lives"),  # signed to last a year
        (0, 121, "lives"),  # just over the bound
        (-600, 60, "lives"),  # a normal lifetime, but issued ten minutes ago and exp pushed along
        (60, 60, "invalid"),  # issued a minute ahead
    ],
)
def test_service_token_lifetime_and_age_are_bounded(api, iat_offset, ttl, why):
    """Ensure a service token is refused when it claims too long a life (however old it is) or comes from the future."""
    now = int(time.time())
    iat = now + iat_offset
    claims = {"typ": "service", "sub": "order", "aud": "inventory", "iat": iat, "exp": iat + ttl}
    if iat_offset == -600:
        claims["exp"] = now + 60  # still unexpired: only its age can give it away
    token = sign_as("order", claims)
    response = api.get("/internal/", **bearer(token))
    assert response.status_code == 401, response.content
    assert why in response.json()["message"]


def test_a_service_token_at_the_bound_is_accepted(api):
    """Ensure the bound leaves room for the lab's own 60-second tokens and a little more."""
    now = int(time.time())
    claims = {"typ": "service", "sub": "order", "aud": "inventory", "iat": now - 30, "exp": now - 30 + 120}
    assert api.get("/internal/", **bearer(sign_as("order", claims))).status_code == 200


def test_service_token_is_cached_until_near_expiry(settings):
    """Ensure the client does not sign a new token for every call."""
    assert auth.service_token("payment") == auth.service_token("payment")
    assert auth.service_token("payment") != auth.service_token("user")


def _count_signature_checks(monkeypatch) -> list:
    """Count the verifications of a signature (``jwt.decode`` with a key) made from now on."""
    checks = []
    decode = jwt.decode

    def counting(token, key=None, *args, **kwargs):
        if key is not None:
            checks.append(token)
        return decode(token, key, *args, **kwargs)

    monkeypatch.setattr(auth.jwt, "decode", counting)
    return checks


def test_a_verified_token_is_checked_once_until_it_expires(api, monkeypatch):
    """Ensure a client's token is verified once for many requests, and refused once it has expired."""
    auth.forget_verified()
    checks = _count_signature_checks(monkeypatch)
    token = user_token(user_id=7, ttl=60)
    for _ in range(10):
        assert api.get("/whoami/", **bearer(token)).status_code == 200
    assert len(checks) == 1

    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    monkeypatch.setattr(auth, "clock", lambda: exp + 6)  # past exp + the 5 s leeway
    refused = api.get("/whoami/", **bearer(token))
    assert refused.status_code == 401
    assert "expired" in refused.json()["message"]


def test_a_cached_token_still_gets_every_check_after_its_signature(api, monkeypatch):
    """Ensure the cache skips only the signature: a service token for another audience stays refused."""
    auth.forget_verified()
    checks = _count_signature_checks(monkeypatch)
    token = service_token(caller="order", audience="payment")
    for _ in range(3):
        assert api.get("/internal/", **bearer(token)).status_code == 401
    assert len(checks) == 1
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert api.get("/internal/", **bearer(forged)).status_code == 401
    assert len(checks) == 2  # a different token string is verified afresh
