"""Breaking the lab from the Faults page: presets, the form, clearing — what reaches the services' /_lab/faults/."""

from __future__ import annotations

import pytest
from django.http import QueryDict

from console import lab as lab_controls

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "slug, service, body",
    [
        ("payment-outage", "payment", {"id": "preset-payment-outage", "kind": "outage", "ttl_seconds": 120}),
        (
            "slow-inventory",
            "inventory",
            {"id": "preset-slow-inventory", "kind": "latency", "delay_ms": 800, "jitter_ms": 100},
        ),
        (
            "flaky-inventory",
            "inventory",
            {"id": "preset-flaky-inventory", "kind": "error", "status": 503, "probability": 0.3},
        ),
        ("orders-db-down", "order", {"id": "preset-orders-db-down", "kind": "database", "mode": "fail"}),
        (
            "inventory-db-down",
            "inventory",
            {"id": "preset-inventory-db-down", "kind": "database", "mode": "fail", "ttl_seconds": 600},
        ),
        (
            "payment-answers-lost",
            "payment",
            {
                "id": "preset-payment-answers-lost",
                "kind": "error",
                "mode": "after",
                "status": 503,
                "path_prefix": "/internal/charges/",
                "method": "POST",
                "ttl_seconds": 300,
            },
        ),
    ],
)
def test_preset_sends_the_right_fault(staff, lab, slug, service, body):
    """Ensure each preset PUTs exactly its fault on exactly its service, as the dashboard."""
    response = staff.post(f"/faults/presets/{slug}/")
    assert response.status_code == 302
    puts = [r for fake in lab.values() for r in fake.requests if r["method"] == "PUT"]
    assert len(puts) == 1
    (put,) = lab[service].sent("PUT", "/_lab/faults/")
    assert put["json"] == body
    assert put["headers"]["Authorization"].startswith("Bearer ")
    assert put["headers"]["X-Request-ID"]


def test_preset_refused_by_the_service_says_why(staff, lab):
    """Ensure a service's refusal is shown as a message, not a crash."""
    lab["payment"].on("PUT", "/_lab/faults/", 403, {"code": "permission_denied", "message": "Only the lab admin."})
    response = staff.post("/faults/presets/payment-outage/", follow=True)
    assert response.status_code == 200
    assert b"Only the lab admin." in response.content


def test_kill_the_worker_without_a_process_manager(staff, lab, settings, tmp_path):
    """Ensure the process preset explains itself when no supervisord runs (no worker to kill)."""
    settings.LAB_ROOT = tmp_path
    response = staff.post("/faults/presets/kill-worker/", follow=True)
    assert response.status_code == 200
    assert b"supervisord" in response.content or b"process manager" in response.content


def test_kill_the_worker_when_there_is_no_worker_program(monkeypatch):
    """Ensure a lab without a 'worker' program gets a clear message."""
    from labctl import process

    def no_worker(paths, *, program, action, ttl=None):
        raise process.ProcessFaultError(f"supervisord has no program named {program!r}; it runs: order, user.")

    monkeypatch.setattr(process, "process_fault", no_worker)
    done, message = lab_controls.worker_kill()
    assert not done
    assert "no 'worker' program" in message


def test_kill_the_worker_asks_labctl_for_a_kill(monkeypatch):
    """Ensure the preset is a SIGKILL of the worker program, through labctl's process faults."""
    from labctl import process

    asked = {}

    def kill(paths, *, program, action, ttl=None):
        asked.update(program=program, action=action)
        return ["worker:worker_00: SIGKILL sent to process group 4242; supervisord will restart it"]

    monkeypatch.setattr(process, "process_fault", kill)
    done, message = lab_controls.worker_kill()
    assert done and asked == {"program": "worker", "action": "kill"}
    assert "4242" in message


def test_clear_all_deletes_every_services_faults(staff, lab):
    """Ensure one button sends DELETE /_lab/faults/ to all four services, and turns their unsafe switches off."""
    for fake in lab.values():
        fake.on("PUT", "/_lab/resilience/", 200, {"switches": {}, "breakers": {}})
    response = staff.post("/faults/clear-all/", follow=True)
    assert response.status_code == 200
    for fake in lab.values():
        assert len(fake.sent("DELETE", "/_lab/faults/")) == 1
        assert [p["json"] for p in fake.sent("PUT", "/_lab/resilience/")] == [
            {"unsafe": {"charge_retry_new_key": False}}
        ]
    assert b"on 4 of 4 services" in response.content


def test_clear_all_names_a_service_whose_unsafe_switch_stays_on(staff, lab):
    """Ensure a service that refuses to turn its unsafe switch off is named, not reported as cleared."""
    for name in ("user", "inventory", "payment"):
        lab[name].on("PUT", "/_lab/resilience/", 200, {"switches": {}, "breakers": {}})
    response = staff.post("/faults/clear-all/", follow=True)
    assert b"Could not clear: order" in response.content
    assert b"on 3 of 4 services" in response.content


def test_clear_all_with_a_dead_service_clears_the_others(staff, lab, settings):
    """Ensure a dead service is named and the three others are still cleared."""
    from .fakes import dead_url

    settings.CHASSIS = {**settings.CHASSIS, "PEERS": {**settings.CHASSIS["PEERS"], "payment": dead_url()}}
    for name in ("user", "order", "inventory"):
        lab[name].on("PUT", "/_lab/resilience/", 200, {"switches": {}, "breakers": {}})
    response = staff.post("/faults/clear-all/", follow=True)
    assert b"Could not clear: payment (down" in response.content
    for name in ("user", "order", "inventory"):
        assert len(lab[name].sent("DELETE", "/_lab/faults/")) == 1


def test_clear_one_fault(staff, lab):
    """Ensure the per-fault button deletes that fault only."""
    lab["order"].on("DELETE", "/_lab/faults/f-abc/", 200, {"faults": [], "cleared": 1})
    response = staff.post("/faults/order/f-abc/clear/", follow=True)
    assert b"Cleared f-abc on order." in response.content
    assert len(lab["order"].sent("DELETE", "/_lab/faults/f-abc/")) == 1


def form(**values) -> QueryDict:
    data = QueryDict(mutable=True)
    data.update(values)
    return data


@pytest.mark.parametrize(
    "values, body",
    [
        (
            {
                "kind": "latency",
                "probability": "50",
                "delay_ms": "300",
                "jitter_ms": "20",
                "status": "500",
                "path_prefix": "/api/",
                "method": "GET",
                "ttl_seconds": "60",
            },
            {
                "kind": "latency",
                "probability": 0.5,
                "delay_ms": 300,
                "jitter_ms": 20,
                "path_prefix": "/api/",
                "method": "GET",
                "ttl_seconds": 60,
            },
        ),
        (
            {"kind": "error", "probability": "100", "status": "500", "delay_ms": "300"},
            {"kind": "error", "probability": 1.0, "status": 500},
        ),
        (
            {"kind": "outage", "probability": "30", "ttl_seconds": "120", "delay_ms": "300"},
            {"kind": "outage", "ttl_seconds": 120},
        ),
        (
            {"kind": "database", "db_mode": "slow", "delay_ms": "250", "probability": "100"},
            {"kind": "database", "mode": "slow", "delay_ms": 250, "probability": 1.0},
        ),
        (
            {"kind": "database", "db_mode": "fail", "delay_ms": "250", "probability": "100"},
            {"kind": "database", "mode": "fail", "probability": 1.0},
        ),
        (
            {"kind": "dependency", "target": "payment", "dep_mode": "hang", "delay_ms": "250", "path_prefix": "/x"},
            {"kind": "dependency", "target": "payment", "mode": "hang"},
        ),
        (
            {"kind": "dependency", "target": "inventory", "dep_mode": "delay", "delay_ms": "250", "jitter_ms": ""},
            {"kind": "dependency", "target": "inventory", "mode": "delay", "delay_ms": 250},
        ),
    ],
)
def test_form_becomes_the_fault_body(values, body):
    """Ensure the form sends only what the chosen kind uses, probability as 0..1."""
    assert lab_controls.fault_body_from_form(form(**values)) == (body, {})


def test_form_catches_what_is_not_a_number():
    """Ensure a typo is caught before anything is sent."""
    body, errors = lab_controls.fault_body_from_form(form(kind="latency", delay_ms="fast"))
    assert errors == {"delay_ms": ["Enter a number."]}


def test_the_services_validation_errors_are_shown_next_to_the_form(staff, lab):
    """Ensure a 400 from the service is shown on the page, beside the form that caused it."""
    lab["inventory"].on(
        "PUT",
        "/_lab/faults/",
        400,
        {
            "code": "invalid",
            "message": "Invalid input. delay_ms: A latency fault needs delay_ms > 0.",
            "fields": {"delay_ms": ["A latency fault needs delay_ms > 0."]},
        },
    )
    response = staff.post("/faults/inventory/add/", {"kind": "latency", "delay_ms": "0", "probability": "100"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="fault-errors-inventory"' in html
    assert "A latency fault needs delay_ms &gt; 0." in html
    assert 'data-testid="fault-errors-payment"' not in html


def test_a_good_form_injects_and_redirects(staff, lab):
    """Ensure a valid form reaches the service and comes back to the Faults page."""
    response = staff.post("/faults/payment/add/", {"kind": "error", "status": "502", "probability": "25"})
    assert response.status_code == 302
    (put,) = lab["payment"].sent("PUT", "/_lab/faults/")
    assert put["json"] == {"kind": "error", "status": 502, "probability": 0.25}


def test_unknown_service_is_404(staff, lab):
    assert staff.post("/faults/shipping/add/", {"kind": "outage"}).status_code == 404


def test_switches_form_sends_a_partial_update(staff, lab):
    """Ensure the resilience form sends every section with its switch and numbers."""
    lab["order"].on("PUT", "/_lab/resilience/", 200, {"switches": {}, "breakers": {}})
    response = staff.post(
        "/resilience/order/",
        {
            "timeouts.enabled": "on",
            "timeouts.connect": "0.5",
            "timeouts.read": "2",
            "retries.attempts": "3",
            "retries.backoff": "0.1",
            "breaker.enabled": "on",
            "breaker.fail_max": "4",
            "breaker.reset_timeout": "15",
            "bulkhead.enabled": "on",
            "bulkhead.max_concurrent": "8",
        },
    )
    assert response.status_code == 302
    (put,) = lab["order"].sent("PUT", "/_lab/resilience/")
    assert put["json"] == {
        "timeouts": {"enabled": True, "connect": 0.5, "read": 2.0},
        "retries": {"enabled": False, "attempts": 3, "backoff": 0.1},
        "breaker": {"enabled": True, "fail_max": 4, "reset_timeout": 15},
        "bulkhead": {"enabled": True, "max_concurrent": 8},
        "fallback": {"enabled": False},
        "unsafe": {"charge_retry_new_key": False},
    }


def test_switches_form_turns_the_unsafe_switch_on(staff, lab):
    """Ensure the red UNSAFE box of the form sends unsafe.charge_retry_new_key=true."""
    lab["order"].on("PUT", "/_lab/resilience/", 200, {"switches": {}, "breakers": {}})
    staff.post("/resilience/order/", {"unsafe.charge_retry_new_key": "on", "retries.enabled": "on"})
    (put,) = lab["order"].sent("PUT", "/_lab/resilience/")
    assert put["json"]["unsafe"] == {"charge_retry_new_key": True}


def test_reset_breakers(staff, lab):
    lab["order"].on("PUT", "/_lab/resilience/", 200, {"switches": {}, "breakers": {}})
    assert staff.post("/resilience/order/reset/").status_code == 302
    assert lab["order"].sent("PUT", "/_lab/resilience/")[0]["json"] == {"reset_breakers": True}


def test_saga_mode_switch(staff, lab):
    """Ensure the saga mode goes to order's /_lab/saga/, and a service without it is reported."""
    lab["order"].on("PUT", "/_lab/saga/", 200, {"mode": "async"})
    staff.post("/resilience/saga/", {"mode": "async"})
    assert lab["order"].sent("PUT", "/_lab/saga/")[0]["json"] == {"mode": "async"}
    lab["order"].routes.pop(("PUT", "/_lab/saga/"))
    response = staff.post("/resilience/saga/", {"mode": "sync"}, follow=True)
    assert b"order_service refused the saga mode" in response.content
