import pytest
from rest_framework.test import APIClient

from chassis import client as client_module

from .peers import ScriptedPeer


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture(autouse=True)
def fresh_lab_state():
    """Each test starts with no faults, default switches and closed breakers."""
    from django.core.cache import cache

    from chassis.lab import resilience, store

    cache.clear()
    store.forget_local()
    resilience._breakers.clear()
    yield
    cache.clear()
    store.forget_local()
    resilience._breakers.clear()


@pytest.fixture
def peer(settings):
    settings.CHASSIS = {**settings.CHASSIS, "RETRY_BACKOFF": 0.01, "RETRY_ATTEMPTS": 3, "READ_TIMEOUT": 0.5}
    server = ScriptedPeer()
    yield server
    server.close()
    client_module._local.__dict__.clear()
