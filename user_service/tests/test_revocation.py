"""Access tokens revoked by logout, a password change and a change of role (chassis.revocation)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts import services
from accounts.models import User
from chassis import revocation
from chassis.testing import bearer

from .helpers import PASSWORD, assert_error, login

pytestmark = pytest.mark.django_db


def logged_in(api, user) -> dict:
    response = login(api, user.email)
    assert response.status_code == 200, response.content
    return response.json()


def me(access: str):
    client = APIClient()
    client.credentials(**bearer(access))
    return client.get("/api/users/me/")


def as_another_process_sees_it():
    """Another service's worker reads the list again once its copy is a refresh old."""
    revocation.forget_local()


def test_logout_revokes_the_access_token_of_its_session(api, user):
    """Ensure an access token is refused once its session logged out, and another session's is not."""
    first, second = logged_in(api, user), logged_in(api, user)
    assert me(first["access"]).status_code == 200

    assert api.post("/api/auth/logout/", {"refresh": first["refresh"]}, format="json").status_code == 204
    as_another_process_sees_it()

    body = assert_error(me(first["access"]), 401, "authentication_failed")
    assert "revoked" in body["message"]
    assert me(second["access"]).status_code == 200


def test_logout_revokes_the_access_tokens_of_later_refreshes_too(api, user):
    """Ensure the session survives a refresh: logging out with the new refresh token revokes both access tokens."""
    first = logged_in(api, user)
    refreshed = api.post("/api/auth/refresh/", {"refresh": first["refresh"]}, format="json").json()

    api.post("/api/auth/logout/", {"refresh": refreshed["refresh"]}, format="json")
    as_another_process_sees_it()

    assert me(first["access"]).status_code == 401
    assert me(refreshed["access"]).status_code == 401


def test_a_password_change_revokes_every_access_token_and_a_new_login_works(api, user):
    """Ensure every access token issued before a password change is refused, and one issued after is not."""
    one, two = logged_in(api, user), logged_in(api, user)
    client = APIClient()
    client.credentials(**bearer(one["access"]))

    changed = client.post(
        "/api/users/me/password/", {"old_password": PASSWORD, "new_password": "a-new-passphrase-77"}, format="json"
    )
    assert changed.status_code == 204, changed.content
    as_another_process_sees_it()

    assert me(one["access"]).status_code == 401
    assert me(two["access"]).status_code == 401
    fresh = login(api, user.email, "a-new-passphrase-77").json()
    assert me(fresh["access"]).status_code == 200


def test_a_demotion_revokes_the_tokens_of_the_account(api, staff):
    """Ensure removing staff ends every session: the staff token is refused and refresh too."""
    pair = logged_in(api, staff)
    assert me(pair["access"]).json()["is_staff"] is True

    assert services.user_staff_set(user=staff, staff=False) is True
    as_another_process_sees_it()

    assert me(pair["access"]).status_code == 401
    assert api.post("/api/auth/refresh/", {"refresh": pair["refresh"]}, format="json").status_code == 401
    again = logged_in(api, User.objects.get(pk=staff.pk))
    assert me(again["access"]).json()["is_staff"] is False


def test_seeding_a_lab_account_out_of_staff_revokes_its_tokens(api, make_user):
    """Ensure seed_lab's account update (staff → not staff) revokes the tokens issued before it."""
    account = make_user(email="helper@lab.local", name="Helper", is_staff=True, is_superuser=True)
    pair = logged_in(api, account)

    assert services.lab_account_ensure(email=account.email, name="Helper", password=PASSWORD, staff=False) == "updated"
    as_another_process_sees_it()

    assert me(pair["access"]).status_code == 401


def test_nothing_changes_when_the_revocation_cannot_be_recorded(api, user, settings):
    """Ensure a password change or logout whose revocation cannot be written is a 503 and changes nothing."""
    pair = logged_in(api, user)
    reachable = settings.CHASSIS
    settings.CHASSIS = {
        **settings.CHASSIS,
        "REVOCATION_CACHE": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        },
    }
    client = APIClient()
    client.credentials(**bearer(pair["access"]))

    changed = client.post(
        "/api/users/me/password/", {"old_password": PASSWORD, "new_password": "a-new-passphrase-77"}, format="json"
    )
    assert_error(changed, 503, "revocation_unavailable")
    assert User.objects.get(pk=user.pk).check_password(PASSWORD)

    assert_error(
        api.post("/api/auth/logout/", {"refresh": pair["refresh"]}, format="json"), 503, "revocation_unavailable"
    )
    settings.CHASSIS = reachable
    assert api.post("/api/auth/refresh/", {"refresh": pair["refresh"]}, format="json").status_code == 200
