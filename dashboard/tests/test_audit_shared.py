"""The Audit partial: anonymous reads share one cached audit, are rate-limited, and staff can force a new one."""

from __future__ import annotations

import threading

import pytest

from console import audit

from .conftest import staff_session

pytestmark = pytest.mark.django_db

RESULT = {"ok": True, "checks": [], "counts": {}}


@pytest.fixture
def computations(monkeypatch, settings):
    """The audit's walk of the services replaced by a counter (the dashboard's client, not the page, is faked)."""
    calls = []
    settings.DASHBOARD_AUDIT_FRESH_SECONDS = 15
    settings.DASHBOARD_AUDIT_ANONYMOUS_PER_WINDOW = 1000

    def run_audit(api, **kwargs):
        calls.append(api)
        return RESULT

    monkeypatch.setattr(audit, "run_audit", run_audit)
    return calls


def test_many_anonymous_reads_compute_the_audit_once(client, lab, computations):
    """Ensure N anonymous requests inside the freshness window walk the services once, and say how old it is."""
    for _ in range(12):
        response = client.get("/partials/audit/")
        assert response.status_code == 200
        assert b'data-testid="audit-age"' in response.content
    assert len(computations) == 1


def test_a_concurrent_burst_computes_once(lab, computations, monkeypatch):
    """Ensure a burst that arrives while the audit is computing waits for that one instead of computing again."""
    release = threading.Event()
    started = threading.Event()

    def slow(api, **kwargs):
        computations.append(api)
        started.set()
        release.wait(10)
        return RESULT

    monkeypatch.setattr(audit, "run_audit", slow)
    results = []
    first = threading.Thread(target=lambda: results.append(audit.audit_shared()))
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=lambda: results.append(audit.audit_shared())) for _ in range(5)]
    for thread in others:
        thread.start()
    release.set()
    for thread in [first, *others]:
        thread.join(15)
    assert len(computations) == 1
    assert len(results) == 6 and all(r["result"] == RESULT for r in results)


def test_the_audit_is_recomputed_once_it_is_older_than_the_window(client, lab, computations, monkeypatch):
    """Ensure the shared audit expires after DASHBOARD_AUDIT_FRESH_SECONDS and its age is shown."""
    now = [1_000_000.0]
    monkeypatch.setattr(audit, "clock", lambda: now[0])
    client.get("/partials/audit/")
    now[0] += 10
    response = client.get("/partials/audit/")
    assert b'data-age="10"' in response.content
    assert len(computations) == 1
    now[0] += 10
    client.get("/partials/audit/")
    assert len(computations) == 2


def test_anonymous_reads_beyond_the_limit_are_429_with_retry_after(client, lab, computations, settings):
    """Ensure one address cannot read the audit without bound: 429, Retry-After, a message saying when."""
    settings.DASHBOARD_AUDIT_ANONYMOUS_PER_WINDOW = 3
    assert [client.get("/partials/audit/").status_code for _ in range(3)] == [200, 200, 200]
    response = client.get("/partials/audit/")
    assert response.status_code == 429
    wait = int(response["Retry-After"])
    assert wait >= 1
    # An HTML fragment the page swaps in (htmx shows nothing of a 4xx unless told to: console.js).
    assert response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert f"Too many audits from your address: the next one in {wait} s." in body
    assert 'role="alert"' in body


def test_the_audit_page_swaps_the_refusal_in(client, lab):
    """Ensure the Audit page's target accepts the partial's 429 and the dashboard's script swaps such refusals."""
    from pathlib import Path

    page = client.get("/audit/").content.decode()
    assert 'id="audit"' in page and "data-swap-refusals" in page.split('id="audit"', 1)[1].split(">", 1)[0]
    script = (Path(audit.__file__).parent / "static" / "console" / "console.js").read_text()
    assert 'closest("[data-swap-refusals]")' in script and "xhr.status === 429" in script


def test_staff_can_force_a_fresh_audit(client, lab, computations):
    """Ensure staff with ?fresh=1 bypass the shared cache (and are not rate-limited)."""
    client.get("/partials/audit/")
    staff_session(client)
    assert client.get("/partials/audit/?fresh=1").status_code == 200
    assert client.get("/partials/audit/?fresh=1").status_code == 200
    assert len(computations) == 3
    assert client.get("/partials/audit/").status_code == 200
    assert len(computations) == 3  # without fresh=1 staff read the shared one too


def test_the_audit_walks_a_bounded_number_of_pages(lab, settings):
    """Ensure the dashboard's audit stops at DASHBOARD_AUDIT_MAX_PAGES pages of an endpoint, with a message."""
    settings.DASHBOARD_AUDIT_MAX_PAGES = 2
    page = {"count": 10_000, "next": "more", "previous": None, "results": [{"id": 1}]}
    lab["order"].on("GET", "/internal/reconciliation/orders/", 200, page)
    out = audit.audit_run()
    assert out["result"] is None and "more than 2 pages" in out["error"]
    walked = lab["order"].sent("GET", "/internal/reconciliation/orders/")
    assert len(walked) == 2
