"""GET/PUT /_lab/saga/: the lab admin's switch between the sync and the async saga, and its deadline."""

import pytest
from rest_framework.test import APIClient

from chassis.lab import store
from chassis.testing import bearer, service_token
from orders import lab

pytestmark = pytest.mark.django_db

URL = "/_lab/saga/"


def test_defaults_are_sync_with_a_two_minute_deadline(dashboard):
    """Ensure the switch starts at sync / 120 s and names the broker in use."""
    response = dashboard.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert (body["service"], body["mode"], body["deadline_seconds"]) == ("order", "sync", 120)
    assert body["broker"] == "memory"  # unit tests publish nowhere
    assert body["queues"] is None


def test_put_is_partial_and_every_process_sees_it(dashboard):
    """Ensure PUT changes only what is sent, and the stored value is what another process would read."""
    first = dashboard.put(URL, {"mode": "async"}, format="json")
    second = dashboard.put(URL, {"deadline_seconds": 300}, format="json")

    assert first.status_code == 200 and first.json()["mode"] == "async" and first.json()["deadline_seconds"] == 120
    assert second.status_code == 200
    assert (second.json()["mode"], second.json()["deadline_seconds"]) == ("async", 300)
    store.forget_local()  # as a worker process would: from the shared cache, not this process's copy
    assert lab.saga_settings() == {"mode": "async", "deadline_seconds": 300}
    assert dashboard.get(URL).json()["mode"] == "async"


def test_staff_user_may_switch(admin):
    """Ensure a staff user is a lab admin too."""
    response = admin.put(URL, {"mode": "async", "deadline_seconds": 60}, format="json")

    assert response.status_code == 200
    assert lab.saga_settings() == {"mode": "async", "deadline_seconds": 60}


def test_only_the_lab_admin_may_read_or_switch(anonymous, alice):
    """Ensure no token is a 401, and a customer or another service is a 403, changing nothing."""
    inventory = APIClient()
    inventory.credentials(**bearer(service_token(caller="inventory", audience="order")))

    assert anonymous.get(URL).status_code == 401
    assert anonymous.put(URL, {"mode": "async"}, format="json").status_code == 401
    for client in (alice, inventory):
        assert client.get(URL).status_code == 403
        assert client.put(URL, {"mode": "async"}, format="json").status_code == 403
    assert lab.saga_settings()["mode"] == "sync"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "later"}, "mode"),
        ({"mode": ""}, "mode"),
        ({"deadline_seconds": 29}, "deadline_seconds"),
        ({"deadline_seconds": 3601}, "deadline_seconds"),
        ({"deadline_seconds": "soon"}, "deadline_seconds"),
        ({"deadline_seconds": True}, "deadline_seconds"),
        ({"mode": "async", "deadlines": 60}, "deadlines"),
        ({}, "non_field_errors"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(dashboard, body, field):
    """Ensure an unknown mode, a deadline out of 30..3600, a typo or an empty body is a 400 and changes nothing."""
    response = dashboard.put(URL, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert field in response.json()["fields"]
    assert lab.saga_settings() == {"mode": "sync", "deadline_seconds": 120}


def test_a_body_that_is_not_an_object_is_a_400(dashboard):
    """Ensure a JSON list or a string is refused with a 400, not a 500."""
    for body in ('["async"]', '"async"'):
        response = dashboard.put(URL, body, content_type="application/json")
        assert response.status_code == 400, response.content


def test_switch_is_in_the_schema(client):
    """Ensure the OpenAPI schema describes GET and PUT /_lab/saga/."""
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    assert {"get", "put"} <= set(schema["paths"]["/_lab/saga/"])
