"""The pages stay up whatever the services do: dead, slow, in an injected outage."""

from __future__ import annotations

import re
import time

import pytest

from collector import services as collector_services
from console.models import FlowRun

pytestmark = pytest.mark.django_db

PAGES = [
    "/",
    "/partials/overview/",
    "/faults/",
    "/partials/faults/",
    "/resilience/",
    "/partials/resilience/",
    "/flows/",
    "/traces/",
    "/partials/traces/",
    "/audit/",
    "/partials/audit/",
    "/load/",
    "/data/",
    "/login/",
    "/labs/",
]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_with_every_service_dead(staff, dead_lab, path):
    """Ensure no page answers 500 when nothing answers the dashboard."""
    response = staff.get(path)
    assert response.status_code == 200, response.content[:500]


def test_overview_shows_dead_services_as_down(client, dead_lab):
    """Ensure each card says down rather than the page failing."""
    html = client.get("/").content.decode()
    for service in ("user", "order", "inventory", "payment"):
        assert f'data-service="{service}" data-state="down"' in html
    assert 'class="card is-bad"' in html


def test_a_slow_service_shows_as_timeout_and_does_not_hang_the_page(client, lab):
    """Ensure a service slower than the dashboard's timeout is a 'timeout' card, and the page still comes back."""
    lab["inventory"].delay = 4.0
    started = time.monotonic()
    html = client.get("/partials/overview/").content.decode()
    elapsed = time.monotonic() - started
    assert 'data-service="inventory" data-state="timeout"' in html
    assert 'data-service="payment" data-state="up"' in html
    assert elapsed < 4.0  # well under the service's delay: the dashboard gave up on it


def test_an_injected_outage_turns_the_card_red_and_is_listed(client, lab):
    """Ensure payment's outage shows on its card and in the fault banner."""
    fault = {
        "id": "preset-payment-outage",
        "kind": "outage",
        "created_at": time.time(),
        "expires_at": time.time() + 100,
        "probability": 1.0,
    }
    lab["payment"].on(
        "GET", "/health/", 503, {"code": "service_outage", "message": "Injected fault: this service is down."}
    )
    lab["payment"].on("GET", "/_lab/faults/", 200, {"service": "payment", "faults": [fault]})
    html = client.get("/partials/overview/").content.decode()
    assert '<article class="card is-bad" data-service="payment" data-state="outage">' in html
    assert "1 active fault" in html
    assert "outage: 503 to everything" in html
    assert 'data-node="payment" data-state="outage"' in html


def test_a_failing_database_check_is_degraded(client, lab):
    """Ensure a 503 health with a failing check names the check."""
    lab["order"].on(
        "GET",
        "/health/",
        503,
        {
            "service": "order",
            "status": "down",
            "faults": [],
            "checks": {"database": {"status": "down", "error": "OperationalError"}, "cache": {"status": "ok"}},
        },
    )
    html = client.get("/partials/overview/").content.decode()
    assert 'data-service="order" data-state="degraded"' in html
    assert "database check failing" in html


def test_breaker_states_are_drawn_on_the_edges(client, lab):
    """Ensure order's breakers colour the order → inventory and order → payment edges."""
    lab["order"].on(
        "GET",
        "/_lab/resilience/",
        200,
        {
            "switches": {},
            "breakers": {
                "inventory": {"state": "closed", "fail_counter": 0, "fail_max": 5},
                "payment": {"state": "open", "fail_counter": 5, "fail_max": 5},
            },
        },
    )
    html = client.get("/partials/overview/").content.decode()
    assert 'data-edge="order-inventory" data-state="closed"' in html
    assert 'data-edge="order-payment" data-state="open"' in html


def test_the_worker_node_shows_the_tasks_waiting_in_its_queue(client, lab):
    """Ensure the Celery worker's node counts the tasks queued for it (order's lab_celery_queue_depth)."""
    lab["order"].on(
        "GET",
        "/metrics",
        200,
        'lab_celery_queue_depth{queue="saga"} 7.0\nlab_celery_queue_depth{queue="beat"} 1.0\n',
    )
    html = client.get("/partials/overview/").content.decode()
    assert re.search(r"<title>Celery worker: [^<]* · 8 queued</title>", html), html


def test_a_flow_with_every_service_dead_is_recorded_not_crashed(staff, dead_lab):
    """Ensure a flow that cannot even register stops with a reason and its page renders."""
    response = staff.post("/flows/checkout-sync/run/")
    assert response.status_code == 302
    run = FlowRun.objects.get()
    assert not run.ok
    assert run.outcome.startswith("stopped while registering a customer: user answered down")
    assert run.hops[0]["state"] == "down"
    page = staff.get(response["Location"])
    assert page.status_code == 200
    assert b"not as expected" in page.content
    trace = staff.get(f"/flows/runs/{run.id}/trace/?seen=0&tries=12")
    assert trace.status_code == 200
    assert b"No span arrived" in trace.content


def test_the_flow_waterfall_polls_until_spans_settle(staff, dead_lab):
    """Ensure the flow's trace partial keeps polling while spans arrive and stops once they are all in."""
    run = FlowRun.objects.create(flow="browse", title="Browse", request_id="flow-browse-1")
    first = staff.get(f"/flows/runs/{run.id}/trace/").content.decode()
    assert 'data-settled="false"' in first and "hx-trigger" in first
    now = time.time_ns()
    collector_services.spans_ingest(
        rows=[
            {
                "trace_id": "1" * 32,
                "span_id": "2" * 16,
                "parent_span_id": "",
                "service": "inventory",
                "name": "GET /api/products/",
                "kind": "server",
                "start_ns": now,
                "end_ns": now + 5_000_000,
                "duration_ms": 5.0,
                "status": "ok",
                "status_message": "",
                "request_id": "flow-browse-1",
                "order_id": "",
                "attributes": {},
                "events": [],
            }
        ]
    )
    polling = staff.get(f"/flows/runs/{run.id}/trace/?seen=0&tries=3").content.decode()
    assert 'data-spans="1"' in polling and 'data-settled="false"' in polling
    settled = staff.get(f"/flows/runs/{run.id}/trace/?seen=1&tries=3").content.decode()
    assert 'data-settled="true"' in settled and "hx-trigger" not in settled
    assert "GET /api/products/" in settled


def test_unknown_and_malformed_trace_pages(client, db):
    assert client.get(f"/traces/{'a' * 32}/").status_code == 404
    assert client.get("/traces/not-a-trace/").status_code == 400


def test_unknown_pages_are_html_404_and_api_404_is_json(client, db):
    page = client.get("/nowhere/")
    assert page.status_code == 404 and b"<html" in page.content
    api = client.get("/api/nowhere/")
    assert api.status_code == 404 and api.json()["code"] == "not_found"


def test_audit_page_with_services_down_says_so(client, dead_lab):
    """Ensure an audit that cannot reach the services is a message, not a 500."""
    html = client.get("/partials/audit/").content.decode()
    assert 'data-testid="audit-result"' in html
    assert 'data-ok="unknown"' in html


def test_static_files_are_served(client, db):
    """Ensure htmx and the stylesheet are vendored (no build step, no CDN)."""
    from django.contrib.staticfiles import finders

    for name in ("console/htmx.min.js", "console/console.css", "console/console.js"):
        assert finders.find(name), name
