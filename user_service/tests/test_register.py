"""POST /api/auth/register/."""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import User

from .helpers import PASSWORD, assert_error

URL = "/api/auth/register/"


def register(client, **overrides):
    body = {"email": "dana@example.test", "password": PASSWORD, "name": "Dana Test", **overrides}
    return client.post(URL, body, format="json")


@pytest.mark.django_db
def test_register_creates_account(api):
    """Ensure a valid sign-up answers 201 {id, email, name}, stores the email in lower case and hashes the password."""
    response = register(api, email="  Dana.Test@Example.TEST ")
    assert response.status_code == 201, response.content
    body = response.json()
    user = User.objects.get()
    assert body == {"id": user.pk, "email": "dana.test@example.test", "name": "Dana Test"}
    assert user.password != PASSWORD and user.check_password(PASSWORD)
    assert not user.is_staff and user.is_active


@pytest.mark.django_db
def test_register_refuses_taken_email_in_any_case(api, make_user):
    """Ensure an email already registered, even spelled in another case, is a 400 on email and adds no row."""
    make_user(email="dana@example.test")
    body = assert_error(register(api, email="DANA@example.test"), 400, "invalid", "email")
    assert body["fields"]["email"] == ["An account with this email already exists."]
    assert User.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "password",
    ["short1", "password", "12345678901", "dana@example.test", "Dana Test 1"],
    ids=["too-short", "common", "numeric", "like-email", "like-name"],
)
def test_register_refuses_weak_password(api, password):
    """Ensure each of Django's four password validators refuses a sign-up, as a 400 on password."""
    assert_error(register(api, password=password), 400, "invalid", "password")
    assert not User.objects.exists()


@pytest.mark.django_db
def test_register_schema_says_how_short_a_password_may_be(api):
    """Ensure the schema gives the password's minimum length, and a shorter one is refused as Django says it."""
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["components"]["schemas"]["RegisterInputRequest"]["properties"]["password"]["minLength"] == 8

    body = assert_error(register(api, password="x9y8z7w"), 400, "invalid", "password")
    assert body["fields"]["password"] == ["This password is too short. It must contain at least 8 characters."]


@pytest.mark.django_db
@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.test", "a b@example.test", "x" * 250 + "@ex.test"])
def test_register_refuses_bad_email(api, email):
    """Ensure a malformed or over-long email is a 400 on email."""
    assert_error(register(api, email=email), 400, "invalid", "email")
    assert not User.objects.exists()


@pytest.mark.django_db
def test_register_bounds_name(api):
    """Ensure a name of 151 characters is refused while 150 is accepted, and a blank name is refused."""
    assert_error(register(api, name="n" * 151), 400, "invalid", "name")
    assert_error(register(api, name="   "), 400, "invalid", "name")
    assert not User.objects.exists()
    assert register(api, name="n" * 150).status_code == 201


@pytest.mark.django_db
def test_register_refuses_malformed_json(api):
    """Ensure a body that is not JSON is a 400 parse_error in the chassis format and creates nothing."""
    response = api.post(URL, data='{"email": "dana@example.test", "password": ', content_type="application/json")
    assert_error(response, 400, "parse_error")
    assert not User.objects.exists()


@pytest.mark.django_db
def test_register_names_every_missing_or_mistyped_field(api):
    """Ensure missing fields and wrong types are reported per field."""
    assert_error(api.post(URL, {}, format="json"), 400, "invalid", "email", "password", "name")
    assert_error(register(api, email=42, name=["Dana"], password={"a": 1}), 400, "invalid", "email", "password", "name")
    assert not User.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_register_concurrent_double_submit_creates_one_account():
    """Ensure two simultaneous sign-ups with one email give one 201 and one 400 on email, not a 500."""
    barrier = threading.Barrier(4)
    statuses = []

    def submit(index):
        try:
            barrier.wait()
            response = register(APIClient(), email="race@example.test", name=f"Racer {index}")
            statuses.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(status for status, _ in statuses)
    assert codes == [201, 400, 400, 400], statuses
    for status, body in statuses:
        if status == 400:
            assert "email" in body["fields"]
    assert User.objects.filter(email="race@example.test").count() == 1
