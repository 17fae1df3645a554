"""Helpers the tests import: real tokens and clients for a user row."""

from __future__ import annotations

from rest_framework.test import APIClient

from chassis.testing import bearer, user_token

PASSWORD = "correct-horse-42"


def access_for(user) -> str:
    """A real access token for ``user``, signed with the user service's key."""
    return user_token(user_id=user.pk, email=user.email, name=user.name, staff=user.is_staff)


def client_for(user) -> APIClient:
    """An API client sending ``user``'s access token."""
    client = APIClient()
    client.credentials(**bearer(access_for(user)))
    return client


def login(client: APIClient, email: str, password: str = PASSWORD, **extra):
    return client.post("/api/auth/login/", {"email": email, "password": password}, format="json", **extra)


def assert_error(response, status: int, code: str, *fields: str) -> dict:
    """Check an answer is in the chassis error format, with this status, code and fields."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert body["code"] == code, body
    assert body["message"] and body["request_id"], body
    for field in fields:
        assert field in body.get("fields", {}), body
    return body
