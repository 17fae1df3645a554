"""Resilience switches, breaker, bulkhead and fallback, against a real HTTP peer."""

import concurrent.futures
import os
import time

import pybreaker
import pytest

from chassis.client import PeerUnavailable, ServiceClient
from chassis.lab import resilience
from chassis.testing import bearer, service_token

REDIS_URL = os.environ.get("CHASSIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def admin(api):
    api.credentials(**bearer(service_token(caller="dashboard", audience="inventory")))
    return api


@pytest.fixture
def shared_breakers(settings):
    """Breakers on the real Redis, as in the running lab."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    settings.CHASSIS = {**settings.CHASSIS, "DEPENDS_ON": ["payment"]}
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    resilience._breakers.clear()
    yield
    redis.Redis.from_url(REDIS_URL).flushdb()
    resilience._breakers.clear()


def set_switches(admin, **changes):
    response = admin.put("/_lab/resilience/", changes, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_switches_validate_and_apply_partially(admin):
    """Ensure a partial PUT changes only what was sent and bad values are 400."""
    body = set_switches(admin, retries={"enabled": False})
    assert body["switches"]["retries"]["enabled"] is False
    assert body["switches"]["breaker"]["enabled"] is True
    for bad in ({"retries": {"attempts": 0}}, {"breaker": {"fail_max": "many"}}, {"timeouts": {"read": 999}}, []):
        assert admin.put("/_lab/resilience/", bad, format="json").status_code == 400


def test_retries_off_means_one_attempt(peer, admin):
    """Ensure switching retries off makes transient 503s visible."""
    set_switches(admin, retries={"enabled": False})
    peer.script = [(503, None), (200, {})]
    with pytest.raises(PeerUnavailable) as failure:
        ServiceClient("payment", base_url=peer.url).get("/x/")
    assert failure.value.attempts == 1 and len(peer.received) == 1


def test_read_timeout_switch(peer, admin):
    """Ensure the read timeout set at run time is the one applied."""
    set_switches(admin, timeouts={"read": 0.2}, retries={"enabled": False})
    peer.delay = 0.6
    started = time.monotonic()
    with pytest.raises(PeerUnavailable) as failure:
        ServiceClient("payment", base_url=peer.url).get("/slow/")
    assert failure.value.reason == "read timed out"
    assert time.monotonic() - started < 0.55


def test_breaker_opens_fails_fast_then_half_opens_and_closes(peer, admin, shared_breakers):
    """Ensure fail_max failures open the breaker, calls then fail without reaching the peer,
    and after reset_timeout one trial call closes it again."""
    # Redis keeps opened_at in whole seconds, so reset_timeouts are whole seconds too.
    set_switches(admin, breaker={"fail_max": 3, "reset_timeout": 2}, retries={"enabled": False})
    client = ServiceClient("payment", base_url=peer.url)
    peer.script = [(503, None)] * 3
    for _ in range(3):
        with pytest.raises(PeerUnavailable):
            client.get("/x/")
    assert resilience.breaker_for("payment").current_state == pybreaker.STATE_OPEN
    with pytest.raises(PeerUnavailable) as fast:
        client.get("/x/")
    assert fast.value.rejected and len(peer.received) == 3

    state = admin.get("/_lab/resilience/").json()["breakers"]["payment"]
    assert state["state"] == "open" and state["fail_counter"] >= 3

    time.sleep(2.1)
    assert client.get("/x/").ok
    assert resilience.breaker_for("payment").current_state == pybreaker.STATE_CLOSED


def test_breaker_state_is_shared_between_processes(peer, admin, shared_breakers):
    """Ensure a breaker opened by one process is open for another (a fresh breaker on the same Redis)."""
    set_switches(admin, breaker={"fail_max": 2, "reset_timeout": 30}, retries={"enabled": False})
    peer.script = [(503, None)] * 2
    for _ in range(2):
        with pytest.raises(PeerUnavailable):
            ServiceClient("payment", base_url=peer.url).get("/x/")
    resilience._breakers.clear()  # what another worker process starts with
    with pytest.raises(PeerUnavailable) as fast:
        ServiceClient("payment", base_url=peer.url).get("/x/")
    assert fast.value.rejected and len(peer.received) == 2
    set_switches(admin, reset_breakers=True)
    assert ServiceClient("payment", base_url=peer.url).get("/x/").ok


def test_4xx_does_not_trip_the_breaker(peer, admin, shared_breakers):
    """Ensure business refusals are answers, not failures of the peer."""
    set_switches(admin, breaker={"fail_max": 2})
    peer.script = [(409, {"code": "x"})] * 5
    for _ in range(5):
        assert ServiceClient("payment", base_url=peer.url).post("/x/", json={}).status == 409
    assert resilience.breaker_for("payment").current_state == pybreaker.STATE_CLOSED


def test_breaker_off_calls_through(peer, admin, shared_breakers):
    """Ensure that with the breaker switched off every call reaches the (failing) peer."""
    set_switches(admin, breaker={"enabled": False, "fail_max": 1}, retries={"enabled": False})
    peer.script = [(503, None)] * 4
    for _ in range(4):
        with pytest.raises(PeerUnavailable) as failure:
            ServiceClient("payment", base_url=peer.url).get("/x/")
        assert not failure.value.rejected
    assert len(peer.received) == 4


def test_bulkhead_rejects_calls_beyond_its_size(peer, admin, settings):
    """Ensure at most max_concurrent calls to one peer are in flight; the rest are turned away after a short wait."""
    settings.CHASSIS = {**settings.CHASSIS, "BULKHEAD_WAIT_SECONDS": 0.05}
    set_switches(admin, bulkhead={"max_concurrent": 2}, retries={"enabled": False}, timeouts={"read": 5})
    peer.delay = 0.5
    client = ServiceClient("payment", base_url=peer.url)

    def call(_):
        try:
            return client.get("/x/").status
        except PeerUnavailable as exc:
            return exc.reason

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(call, range(5)))
    assert results.count(200) == 2
    assert sum("bulkhead full" in str(r) for r in results) == 3


def test_a_short_burst_waits_for_the_bulkhead_instead_of_failing(peer, admin, settings):
    """Ensure calls beyond the bulkhead wait (BULKHEAD_WAIT_SECONDS) for a slot: a burst of quick calls all succeed."""
    settings.CHASSIS = {**settings.CHASSIS, "BULKHEAD_WAIT_SECONDS": 2.0}
    set_switches(admin, bulkhead={"max_concurrent": 2}, retries={"enabled": False}, timeouts={"read": 5})
    peer.delay = 0.1
    client = ServiceClient("payment", base_url=peer.url)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: client.get("/x/").status, range(6)))
    assert results == [200] * 6


def test_fallback_serves_the_last_good_answer(peer, admin):
    """Ensure a GET with a fallback key is served stale when the peer is down, and not when the switch is off."""
    client = ServiceClient("inventory", base_url=peer.url)
    peer.script = [(200, {"name": "Keyboard"})]
    assert client.get("/p/KB-1/", fallback_key="KB-1").data == {"name": "Keyboard"}
    set_switches(admin, retries={"enabled": False})
    peer.script = [(503, None)]
    stale = client.get("/p/KB-1/", fallback_key="KB-1")
    assert stale.stale and stale.data == {"name": "Keyboard"}
    set_switches(admin, fallback={"enabled": False})
    peer.script = [(503, None)]
    with pytest.raises(PeerUnavailable):
        client.get("/p/KB-1/", fallback_key="KB-1")


def test_a_client_with_its_own_policy_ignores_the_switches(peer, admin):
    """Ensure a client given a fixed policy (the dashboard's) keeps it whatever the lab's switches say."""
    set_switches(admin, retries={"enabled": True, "attempts": 5})
    peer.script = [(503, None), (200, {})]
    client = ServiceClient("payment", base_url=peer.url, policy={"retries": {"enabled": False}})
    with pytest.raises(PeerUnavailable) as failure:
        client.get("/x/")
    assert failure.value.attempts == 1 and len(peer.received) == 1


@pytest.fixture
def serving_threads():
    """Set the serving threads as gunicorn's post_worker_init hook does; put the module back after."""
    before = resilience._serving_threads
    yield resilience.set_serving_threads
    resilience._serving_threads = before


@pytest.mark.parametrize("threads, expected", [(4, 2), (8, 4), (3, 1), (1, 1)])
def test_bulkhead_default_is_half_the_serving_threads(settings, serving_threads, threads, expected):
    """Ensure the default bulkhead per peer stays below the threads it protects: a hanging peer cannot hold them all."""
    settings.CHASSIS = {**settings.CHASSIS, "BULKHEAD_MAX_CONCURRENT": 0}
    serving_threads(threads)
    assert resilience.defaults()["bulkhead"]["max_concurrent"] == expected
    assert resilience.switches()["bulkhead"]["max_concurrent"] == expected


def test_bulkhead_setting_and_unknown_threads(settings, serving_threads):
    """Ensure BULKHEAD_MAX_CONCURRENT wins over the threads, and outside gunicorn the fixed default applies."""
    settings.CHASSIS = {**settings.CHASSIS, "BULKHEAD_MAX_CONCURRENT": 3}
    serving_threads(8)
    assert resilience.defaults()["bulkhead"]["max_concurrent"] == 3
    settings.CHASSIS = {**settings.CHASSIS, "BULKHEAD_MAX_CONCURRENT": 0}
    resilience._serving_threads = None
    assert resilience.defaults()["bulkhead"]["max_concurrent"] == resilience.UNKNOWN_THREADS_BULKHEAD


def test_gunicorn_hook_tells_the_serving_threads(serving_threads):
    """Ensure the gunicorn config every service runs with hands the worker's thread count to the bulkhead."""
    from types import SimpleNamespace

    from chassis import gunicorn_conf

    gunicorn_conf.post_worker_init(SimpleNamespace(cfg=SimpleNamespace(threads=6)))
    assert resilience._serving_threads == 6


def test_unsafe_switch_is_off_by_default_and_a_reset_turns_it_off(admin):
    """Ensure the unsafe switch starts off, a PUT turns it on (only it), and DELETE puts it back off."""
    body = admin.get("/_lab/resilience/").json()
    assert body["switches"]["unsafe"] == {"charge_retry_new_key": False} == body["defaults"]["unsafe"]
    on = set_switches(admin, unsafe={"charge_retry_new_key": True})
    assert on["switches"]["unsafe"] == {"charge_retry_new_key": True}
    assert on["switches"]["retries"] == body["switches"]["retries"]
    assert (
        admin.put("/_lab/resilience/", {"unsafe": {"charge_retry_new_key": "maybe"}}, format="json").status_code == 400
    )
    assert admin.delete("/_lab/resilience/").json()["switches"]["unsafe"] == {"charge_retry_new_key": False}
