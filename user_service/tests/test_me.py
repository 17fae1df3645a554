"""GET/PATCH /api/users/me/ and POST /api/users/me/password/."""

import pytest

from accounts.models import RefreshToken, User
from chassis.testing import bearer, service_token

from .helpers import PASSWORD, assert_error, client_for, login

ME = "/api/users/me/"
PASSWORD_URL = "/api/users/me/password/"


def change_password(client, old, new):
    return client.post(PASSWORD_URL, {"old_password": old, "new_password": new}, format="json")


@pytest.mark.django_db
def test_me_shows_the_logged_in_user(user_client, user, django_assert_max_num_queries):
    """Ensure /me answers the user's own row in one query."""
    with django_assert_max_num_queries(1):
        response = user_client.get(ME)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == user.pk and body["email"] == "carol@example.test"
    assert body["name"] == "Carol Test" and body["is_staff"] is False and body["date_joined"]
    assert set(body) == {"id", "email", "name", "is_staff", "date_joined"}


@pytest.mark.django_db
def test_me_needs_a_user_token(api):
    """Ensure an anonymous /me is a 401 with WWW-Authenticate."""
    response = api.get(ME)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_me_of_a_deleted_or_disabled_user_is_401(make_user):
    """Ensure a still-valid token of a user deleted or disabled since is a 401, not a 404 or 500."""
    deleted, disabled = make_user(), make_user()
    deleted_client, disabled_client = client_for(deleted), client_for(disabled)
    deleted.delete()
    User.objects.filter(pk=disabled.pk).update(is_active=False)
    assert_error(deleted_client.get(ME), 401, "account_unavailable")
    assert_error(disabled_client.patch(ME, {"name": "New"}, format="json"), 401, "account_unavailable")


@pytest.mark.django_db
def test_me_patch_changes_the_name_only(user_client, user):
    """Ensure PATCH changes the name and ignores fields the user may not change."""
    body = {"name": "  Carol Renamed ", "email": "x@example.test", "is_staff": True}
    response = user_client.patch(ME, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Carol Renamed"
    user.refresh_from_db()
    assert (user.name, user.email, user.is_staff) == ("Carol Renamed", "carol@example.test", False)


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["", "   ", "n" * 151, None, 12, "Admin\u202e", "two\nlines"])
def test_me_patch_refuses_bad_names(user_client, user, name):
    """Ensure a blank, over-long, null, non-string or control-character name is a 400 on name and changes nothing."""
    assert_error(user_client.patch(ME, {"name": name}, format="json"), 400, "invalid", "name")
    user.refresh_from_db()
    assert user.name == "Carol Test"


@pytest.mark.django_db
def test_password_change_revokes_every_refresh_token(api, user, user_client):
    """Ensure a password change answers 204, revokes all refresh tokens, and only the new password logs in."""
    phone, laptop = login(api, user.email).json(), login(api, user.email).json()
    response = change_password(user_client, PASSWORD, "a-brand-new-secret")
    assert response.status_code == 204, response.content
    assert not RefreshToken.objects.filter(user=user, revoked_at__isnull=True).exists()
    for device in (phone, laptop):
        assert api.post("/api/auth/refresh/", {"refresh": device["refresh"]}, format="json").status_code == 401
    assert login(api, user.email).status_code == 401
    assert login(api, user.email, "a-brand-new-secret").status_code == 200


@pytest.mark.django_db
def test_password_change_checks_the_old_password(api, user, user_client):
    """Ensure a wrong old password is a 400 on old_password and changes nothing."""
    session = login(api, user.email).json()
    response = change_password(user_client, "guess", "a-brand-new-secret")
    assert_error(response, 400, "invalid", "old_password")
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    assert api.post("/api/auth/refresh/", {"refresh": session["refresh"]}, format="json").status_code == 200


@pytest.mark.django_db
def test_password_change_validates_the_new_password(user_client, user):
    """Ensure a weak new password is a 400 on new_password; missing fields are named."""
    response = change_password(user_client, PASSWORD, "123")
    assert_error(response, 400, "invalid", "new_password")
    assert_error(user_client.post(PASSWORD_URL, {}, format="json"), 400, "invalid", "old_password", "new_password")
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


@pytest.mark.django_db
def test_password_change_is_throttled(user_client, settings):
    """Ensure guessing the old password through this endpoint is as limited as logging in."""
    settings.LOGIN_RATE_PER_ACCOUNT = "2/min"
    for _ in range(2):
        change_password(user_client, "guess", "a-brand-new-secret")
    response = change_password(user_client, PASSWORD, "a-brand-new-secret")
    assert_error(response, 429, "throttled")


@pytest.mark.django_db
def test_service_token_is_not_a_user(api):
    """Ensure another service's token cannot use /me."""
    assert_error(api.get(ME, **bearer(service_token(caller="order", audience="user"))), 403, "permission_denied")
