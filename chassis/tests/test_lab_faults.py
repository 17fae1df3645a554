"""Fault injection seen from outside: through the HTTP API and the peer client."""

import random

import pytest

from chassis.client import PeerUnavailable, ServiceClient
from chassis.lab import faults, store
from chassis.testing import bearer, service_token, user_token


@pytest.fixture
def admin_headers():
    return bearer(service_token(caller="dashboard", audience="inventory"))


@pytest.fixture
def sleeps(monkeypatch):
    """Record injected waits instead of sleeping them."""
    recorded = []
    monkeypatch.setattr(faults, "sleep", recorded.append)
    return recorded


def put_fault(api, headers, **fault):
    response = api.put("/_lab/faults/", fault, format="json", **headers)
    assert response.status_code == 201, response.content
    return response.json()["added"]


def test_only_the_lab_admin_may_touch_faults(api):
    """Ensure anonymous is 401, a customer or another service is 403, staff and the dashboard pass."""
    assert api.get("/_lab/faults/").status_code == 401
    assert api.get("/_lab/faults/", **bearer(user_token(user_id=1))).status_code == 403
    assert api.get("/_lab/faults/", **bearer(service_token(caller="order", audience="inventory"))).status_code == 403
    assert api.get("/_lab/faults/", **bearer(user_token(user_id=2, staff=True))).status_code == 200
    assert (
        api.get("/_lab/faults/", **bearer(service_token(caller="dashboard", audience="inventory"))).status_code == 200
    )


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "meteor"},
        {"kind": "error", "probability": 2},
        {"kind": "latency"},
        {"kind": "dependency"},
        {"kind": "dependency", "target": "payment", "mode": "slow"},
        {"kind": "database", "mode": "hang"},
        {"kind": "error", "status": 200},
        {"kind": "error", "ttl_seconds": 0},
        {"kind": "error", "path_prefix": "no-slash"},
    ],
)
def test_bad_faults_are_400(api, admin_headers, fault):
    """Ensure a malformed fault is refused with a field message and nothing is stored."""
    response = api.put("/_lab/faults/", fault, format="json", **admin_headers)
    assert response.status_code == 400
    assert response.json()["fields"]
    assert faults.faults_active() == []


@pytest.mark.django_db
def test_outage_answers_503_everywhere_but_lab(api, admin_headers):
    """Ensure an outage takes /health/ and the API down, keeps /_lab/ up, and clears in one call."""
    fault = put_fault(api, admin_headers, kind="outage")
    assert api.get("/health/").status_code == 503
    assert api.post("/echo/", {"name": "a", "quantity": 1}, format="json").status_code == 503
    listed = api.get("/_lab/faults/", **admin_headers).json()["faults"]
    assert [f["id"] for f in listed] == [fault["id"]]
    assert api.delete("/_lab/faults/", **admin_headers).json()["cleared"] == 1
    assert api.get("/health/").status_code == 200


@pytest.mark.django_db
def test_active_faults_are_listed_in_health(api, admin_headers):
    """Ensure /health/ shows the faults in force so the dashboard can show them."""
    put_fault(api, admin_headers, kind="latency", delay_ms=5, path_prefix="/echo/")
    assert [f["kind"] for f in api.get("/health/").json()["faults"]] == ["latency"]


def test_error_fault_respects_its_scope(api, admin_headers):
    """Ensure a scoped error fault hits only its path prefix and method."""
    put_fault(api, admin_headers, kind="error", status=502, path_prefix="/echo/", method="POST")
    hit = api.post("/echo/", {"name": "a", "quantity": 1}, format="json")
    assert hit.status_code == 502 and hit.json()["code"] == "injected_error" and hit["X-Lab-Fault"]
    assert api.get("/whoami/", **bearer(user_token(user_id=1))).status_code == 200


def test_error_ratio_follows_the_probability(api, admin_headers, monkeypatch):
    """Ensure a 30% error fault fails about 30% of 400 calls (seeded, so the test is stable)."""
    monkeypatch.setattr(faults, "rng", random.Random(7))
    put_fault(api, admin_headers, kind="error", status=500, probability=0.3, path_prefix="/echo/")
    failures = sum(
        api.post("/echo/", {"name": "a", "quantity": 1}, format="json").status_code == 500 for _ in range(400)
    )
    assert 0.23 < failures / 400 < 0.37


def test_latency_fault_waits_delay_plus_jitter(api, admin_headers, sleeps, monkeypatch):
    """Ensure a latency fault waits delay ± jitter before the request is served."""
    monkeypatch.setattr(faults, "rng", random.Random(1))
    put_fault(api, admin_headers, kind="latency", delay_ms=800, jitter_ms=100, path_prefix="/echo/")
    for _ in range(20):
        assert api.post("/echo/", {"name": "a", "quantity": 1}, format="json").status_code == 201
    assert len(sleeps) == 20
    assert all(0.7 <= s <= 0.9 for s in sleeps) and len({round(s, 3) for s in sleeps}) > 1


@pytest.mark.django_db
def test_database_fault_gives_503_not_500(api, admin_headers):
    """Ensure queries failing under a database fault answer 503 database_unavailable."""
    put_fault(api, admin_headers, kind="database", mode="fail")
    response = api.get("/health/")
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["status"] == "down"
    assert api.get("/_lab/faults/", **admin_headers).status_code == 200


@pytest.mark.django_db
def test_slow_database_fault_delays_each_query(api, admin_headers, sleeps):
    """Ensure a slow database fault waits on each query and still answers."""
    put_fault(api, admin_headers, kind="database", mode="slow", delay_ms=300)
    assert api.get("/health/").status_code == 200
    assert sleeps and all(s == pytest.approx(0.3) for s in sleeps)


def test_fault_expires_after_its_ttl(api, admin_headers, monkeypatch):
    """Ensure a fault with a TTL clears itself (clock injected, no sleeping)."""
    now = [1_000_000.0]
    monkeypatch.setattr(faults, "clock", lambda: now[0])
    put_fault(api, admin_headers, kind="outage", ttl_seconds=60)
    assert len(faults.faults_active()) == 1
    now[0] += 61
    assert faults.faults_active() == []


def test_clear_one_fault_by_id(api, admin_headers):
    """Ensure one fault can be cleared by id and an unknown id is a 404."""
    first = put_fault(api, admin_headers, kind="error", path_prefix="/a/")
    put_fault(api, admin_headers, kind="error", path_prefix="/b/")
    assert api.delete(f"/_lab/faults/{first['id']}/", **admin_headers).status_code == 200
    assert [f["path_prefix"] for f in faults.faults_active()] == ["/b/"]
    assert api.delete("/_lab/faults/nope/", **admin_headers).status_code == 404


def test_a_change_is_seen_by_another_process_within_the_refresh(settings, monkeypatch):
    """Ensure a process that cached the fault list sees another process's write after LAB_STATE_REFRESH."""
    now = [0.0]
    monkeypatch.setattr(store, "clock", lambda: now[0])
    assert faults.faults_active() == []
    from django.core.cache import cache

    cache.set(
        "lab:faults", {"x": {"id": "x", "kind": "outage", "created_at": 1, "expires_at": None}}
    )  # another process
    assert faults.faults_active() == []  # still within this process's refresh window
    now[0] += settings.CHASSIS["LAB_STATE_REFRESH"] + 0.01
    assert [f["id"] for f in faults.faults_active()] == ["x"]


def test_dependency_fault_fail_is_seen_only_by_the_caller(peer, api, admin_headers):
    """Ensure a failing dependency fault stops calls before they reach the peer."""
    put_fault(api, admin_headers, kind="dependency", target="payment", mode="fail")
    with pytest.raises(PeerUnavailable):
        ServiceClient("payment", base_url=peer.url).get("/x/")
    assert peer.received == []
    assert ServiceClient("user", base_url=peer.url).get("/x/").ok


def test_dependency_fault_delay_and_hang(peer, api, admin_headers, sleeps):
    """Ensure delay waits then calls; hang waits the read timeout and fails like a timeout."""
    fault = put_fault(api, admin_headers, kind="dependency", target="payment", mode="delay", delay_ms=250)
    assert ServiceClient("payment", base_url=peer.url).get("/x/").ok
    assert sleeps == [0.25]
    api.delete(f"/_lab/faults/{fault['id']}/", **admin_headers)
    put_fault(api, admin_headers, kind="dependency", target="payment", mode="hang")
    with pytest.raises(PeerUnavailable) as failure:
        ServiceClient("payment", base_url=peer.url).post("/charge/", json={})
    assert failure.value.reason == "read timed out"
    assert len(peer.received) == 1  # the delayed call only: the hung one never left


def test_error_after_fault_serves_the_request_then_loses_its_answer(api, admin_headers, monkeypatch):
    """Ensure an error fault with mode=after runs the view (its work is done), then answers its status instead."""
    from tests.urls import EchoApi

    served = []
    original = EchoApi.post
    monkeypatch.setattr(EchoApi, "post", lambda self, request: served.append(request.data) or original(self, request))
    put_fault(api, admin_headers, kind="error", mode="after", status=503, path_prefix="/echo/", method="POST")
    lost = api.post("/echo/", {"name": "a", "quantity": 1}, format="json")
    assert lost.status_code == 503 and lost.json()["code"] == "answer_lost" and lost["X-Lab-Fault"]
    assert served == [{"name": "a", "quantity": 1}]
    assert api.get("/whoami/", **bearer(user_token(user_id=1))).status_code == 200


@pytest.mark.parametrize(
    "fault", [{"kind": "error", "mode": "hang"}, {"kind": "latency", "delay_ms": 5, "mode": "after"}]
)
def test_mode_after_belongs_to_error_faults(api, admin_headers, fault):
    """Ensure mode=after is refused on other kinds, and other modes on an error fault."""
    response = api.put("/_lab/faults/", fault, format="json", **admin_headers)
    assert response.status_code == 400 and "mode" in response.json()["fields"]
