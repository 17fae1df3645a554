"""Fixtures of the dashboard's tests: scripted services on loopback, dead ones, a staff session."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from chassis import client as chassis_client
from chassis.testing import user_token
from collector import services as collector_services
from console.auth import SESSION_KEY

from .fakes import FakeService, dead_url

SERVICES = ("user", "order", "inventory", "payment")


@pytest.fixture(autouse=True)
def _fresh_state():
    cache.clear()
    collector_services.reset_prune_counter()
    yield
    cache.clear()
    chassis_client._local.__dict__.clear()  # no pooled connection to a server a test has closed


def healthy(service: str, fake: FakeService) -> None:
    """Routes every healthy service answers."""
    fake.on(
        "GET",
        "/health/",
        200,
        {
            "service": service,
            "status": "ok",
            "checks": {
                "database": {"status": "ok", "engine": "mysql", "name": f"lab_{service}"},
                "cache": {"status": "ok", "backend": "RedisCache"},
            },
            "faults": [],
        },
    )
    fake.on("GET", "/_lab/faults/", 200, {"service": service, "faults": []})
    fake.on("PUT", "/_lab/faults/", 201, {"service": service, "faults": [], "added": {"id": "f-1"}})
    fake.on("DELETE", "/_lab/faults/", 200, {"service": service, "faults": [], "cleared": 1})
    fake.on("GET", "/_lab/resilience/", 200, {"service": service, "switches": {}, "breakers": {}})
    fake.on("GET", "/metrics", 200, "")


@pytest.fixture
def lab(settings):
    """Four scripted, healthy services the dashboard is pointed at."""
    fakes = {name: FakeService() for name in SERVICES}
    for name, fake in fakes.items():
        healthy(name, fake)
    settings.CHASSIS = {
        **settings.CHASSIS,
        "PEERS": {**settings.CHASSIS["PEERS"], **{n: f.url for n, f in fakes.items()}},
    }
    yield fakes
    for fake in fakes.values():
        fake.close()


@pytest.fixture
def dead_lab(settings):
    """Every service down: nothing listens where the dashboard looks."""
    settings.CHASSIS = {**settings.CHASSIS, "PEERS": {**settings.CHASSIS["PEERS"], **{n: dead_url() for n in SERVICES}}}


def staff_session(client, *, email: str = "admin@lab.local") -> None:
    session = client.session
    session[SESSION_KEY] = {
        "user": {"id": "3", "email": email, "name": "Lab Admin"},
        "access": user_token(user_id=3, email=email, staff=True),
        "refresh": "",
        "access_exp": 2**31,
    }
    session.save()


@pytest.fixture
def staff(client):
    """The test client, logged in as a staff member."""
    staff_session(client)
    return client
