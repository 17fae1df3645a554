"""Reading traces back: bounded retention, the trace list, and one trace as a tree for the waterfall."""

from __future__ import annotations

import time

import pytest

from collector import selectors, services
from collector.models import Span

pytestmark = pytest.mark.django_db

NOW = time.time_ns()


def row(
    trace: int,
    span: int,
    *,
    parent: int = 0,
    service: str = "order",
    name: str = "op",
    start_ms: float = 0,
    duration_ms: float = 10,
    status: str = "ok",
    request_id: str = "",
    order_id: str = "",
    events=None,
) -> dict:
    start = NOW + int(start_ms * 1_000_000)
    return {
        "trace_id": f"{trace:032x}",
        "span_id": f"{span:016x}",
        "parent_span_id": f"{parent:016x}" if parent else "",
        "service": service,
        "name": name,
        "kind": "server",
        "start_ns": start,
        "end_ns": start + int(duration_ms * 1_000_000),
        "duration_ms": duration_ms,
        "status": status,
        "status_message": "",
        "request_id": request_id,
        "order_id": order_id,
        "attributes": {"k": "v"},
        "events": events or [],
    }


def test_pruning_keeps_only_the_newest_spans(settings):
    """Ensure the table never holds more than TRACES_KEEP_SPANS, the newest ones kept."""
    services.spans_ingest(rows=[row(1, i + 1, start_ms=i) for i in range(12)])
    deleted = services.spans_prune(keep=5, keep_minutes=60)
    assert deleted == 7
    assert sorted(Span.objects.values_list("span_id", flat=True)) == [f"{i:016x}" for i in range(8, 13)]


def test_pruning_drops_spans_past_the_age_limit(monkeypatch):
    """Ensure spans older than TRACES_KEEP_MINUTES go, younger ones stay."""
    services.spans_ingest(rows=[row(1, 1, start_ms=-61 * 60_000), row(1, 2, start_ms=-59 * 60_000)])
    monkeypatch.setattr(services, "clock", lambda: NOW)
    services.spans_prune(keep=50_000, keep_minutes=60)
    assert list(Span.objects.values_list("span_id", flat=True)) == [f"{2:016x}"]


def test_ingestion_prunes_every_so_many_spans(settings):
    """Ensure pruning happens on its own as spans arrive, not on every insert."""
    settings.TRACES_KEEP_SPANS = 3
    settings.TRACES_PRUNE_EVERY = 10
    services.spans_ingest(rows=[row(1, 1)])  # the first export of a process prunes once
    services.spans_ingest(rows=[row(1, i) for i in range(2, 9)])  # 7 more: below the threshold
    assert Span.objects.count() == 8
    services.spans_ingest(rows=[row(1, i) for i in range(9, 13)])  # crosses 10 since the last prune
    assert Span.objects.count() == 3


def test_trace_tree_nests_children_with_offsets():
    """Ensure a trace comes back as a tree: children under parents, offsets from the trace start, events placed."""
    services.spans_ingest(
        rows=[
            row(7, 1, name="flow.checkout", service="dashboard", duration_ms=100),
            row(7, 2, parent=1, name="POST", service="dashboard", start_ms=10, duration_ms=80),
            row(7, 3, parent=2, name="POST /api/orders/", start_ms=12, duration_ms=70),
            row(
                7,
                5,
                parent=3,
                name="saga.charge",
                start_ms=50,
                duration_ms=20,
                service="order",
                status="error",
                events=[{"name": "lab.retry", "time_ns": NOW + 60_000_000, "attributes": {}}],
            ),
            row(7, 4, parent=3, name="saga.reserve", start_ms=20, duration_ms=20),
            row(7, 6, parent=99, name="late orphan", start_ms=30, service="payment"),
        ]
    )
    tree = selectors.trace_get(trace_id=f"{7:032x}")

    assert tree["span_count"] == 6
    assert tree["duration_ms"] == 100
    assert tree["services"] == ["dashboard", "order", "payment"]
    assert tree["error"] is True
    root, orphan = tree["spans"]
    assert (root["name"], root["offset_ms"], root.get("orphan")) == ("flow.checkout", 0, False)
    assert orphan["name"] == "late orphan" and orphan["orphan"] is True
    server = root["children"][0]["children"][0]
    assert server["name"] == "POST /api/orders/"
    assert [c["name"] for c in server["children"]] == ["saga.reserve", "saga.charge"]  # by start time
    charge = server["children"][1]
    assert charge["offset_ms"] == 50
    assert charge["events"][0]["offset_ms"] == 60

    rows = selectors.waterfall_rows(tree)
    assert [r["depth"] for r in rows] == [0, 1, 2, 3, 3, 0]
    assert rows[4]["left_pct"] == 50 and rows[4]["width_pct"] == 20


def test_trace_list_summarises_and_filters():
    """Ensure the list shows each trace's root, services, size, duration and error flag, and filters work."""
    services.spans_ingest(
        rows=[
            row(1, 1, name="GET /api/products/", service="inventory", duration_ms=5),
            row(2, 1, name="POST /api/orders/", service="order", start_ms=100, duration_ms=300, request_id="rid-2"),
            row(
                2,
                2,
                parent=1,
                name="POST /internal/charges/",
                service="payment",
                start_ms=150,
                duration_ms=50,
                status="error",
                order_id="42",
            ),
        ]
    )
    traces = selectors.trace_list()
    assert [t["trace_id"] for t in traces] == [f"{2:032x}", f"{1:032x}"]  # newest first
    checkout = traces[0]
    assert checkout["root"] == {"name": "POST /api/orders/", "service": "order", "http_status": None}
    assert checkout["services"] == ["order", "payment"]
    assert (checkout["span_count"], checkout["duration_ms"], checkout["error"]) == (2, 300, True)

    assert [t["trace_id"] for t in selectors.trace_list(service="payment")] == [f"{2:032x}"]
    assert [t["trace_id"] for t in selectors.trace_list(errors_only=True)] == [f"{2:032x}"]
    assert [t["trace_id"] for t in selectors.trace_list(min_duration_ms=100)] == [f"{2:032x}"]
    assert [t["trace_id"] for t in selectors.trace_list(request_id="rid-2")] == [f"{2:032x}"]
    assert [t["trace_id"] for t in selectors.trace_list(order_id="42")] == [f"{2:032x}"]
    assert len(selectors.trace_list(limit=1)) == 1


def test_trace_list_hides_the_workers_periodic_jobs_on_request():
    """Ensure a trace the worker starts on its own is flagged background and left out with background=False.

    A saga task queued by a request is a child in the request's trace: it stays.
    """
    services.spans_ingest(
        rows=[
            row(1, 1, name="run/orders.sagas_recover", service="worker"),
            row(2, 1, name="POST /api/orders/", service="order", start_ms=10),
            row(2, 2, parent=1, name="run/orders.saga_run", service="worker", start_ms=20),
        ]
    )
    everything = {t["trace_id"]: t["background"] for t in selectors.trace_list()}
    assert everything == {f"{1:032x}": True, f"{2:032x}": False}
    assert [t["trace_id"] for t in selectors.trace_list(background=False)] == [f"{2:032x}"]


def test_trace_list_and_waterfall_give_the_http_status():
    """Ensure a root answered 4xx shows its status (OpenTelemetry leaves a server span's 4xx unset, not error)."""
    refused = row(4, 1, name="POST /api/orders/", status="unset")
    refused["attributes"] = {"http.response.status_code": 409}
    services.spans_ingest(rows=[refused])
    (listed,) = selectors.trace_list()
    assert listed["root"]["http_status"] == 409 and listed["error"] is False
    (drawn,) = selectors.waterfall_rows(selectors.trace_get(trace_id=f"{4:032x}"))
    assert drawn["http_status"] == 409


def test_trace_api(client):
    """Ensure GET /api/traces/<id>/ answers the tree, 404 for an unknown id, 400 for a malformed one."""
    services.spans_ingest(rows=[row(3, 1, name="root"), row(3, 2, parent=1, name="child")])
    response = client.get(f"/api/traces/{3:032x}/")
    assert response.status_code == 200
    body = response.json()
    assert body["spans"][0]["name"] == "root"
    assert body["spans"][0]["children"][0]["name"] == "child"

    assert client.get(f"/api/traces/{4:032x}/").status_code == 404
    for bad in ("xyz", "0" * 32, "a" * 31, "g" * 32):
        response = client.get(f"/api/traces/{bad}/")
        assert response.status_code == 400, bad
        assert response.json()["code"] == "invalid"


def test_trace_list_api(client):
    """Ensure GET /api/traces/ lists with its filters and refuses nonsense numbers."""
    services.spans_ingest(rows=[row(5, 1, status="error"), row(6, 1)])
    body = client.get("/api/traces/?status=error&limit=10").json()
    assert body["count"] == 1 and body["results"][0]["trace_id"] == f"{5:032x}"
    assert client.get("/api/traces/?min_duration_ms=abc").status_code == 400
    assert client.get("/api/traces/?status=weird").status_code == 400


def _json_depth(value) -> int:
    """How deeply a decoded JSON value nests (without recursion, like the code it checks)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else []
        stack.extend((child, depth + 1) for child in children)
    return deepest


def test_a_parent_chain_1500_spans_deep_is_answered_bounded_by_the_api_and_the_page(client):
    """Ensure a stored chain far deeper than any real trace is a 200 with every span, nested 64 deep at most."""
    services.spans_ingest(rows=[row(7, i, parent=i - 1 if i > 1 else 0, start_ms=i * 0.01) for i in range(1, 1501)])
    response = client.get(f"/api/traces/{7:032x}/")
    assert response.status_code == 200
    body = response.json()
    assert body["span_count"] == 1500
    assert len(body["spans"]) == 1500 // selectors.MAX_TREE_DEPTH + 1  # a new root every 64 levels
    assert body["spans"][1]["deep"] == selectors.MAX_TREE_DEPTH
    assert _json_depth(body) <= 2 * selectors.MAX_TREE_DEPTH + 8
    page = client.get(f"/traces/{7:032x}/")
    assert page.status_code == 200
    assert len(selectors.waterfall_rows(selectors.trace_get(trace_id=f"{7:032x}"))) == 1500


def test_a_loop_of_parents_shows_its_spans_as_roots(client):
    """Ensure spans that name each other as parents are shown (as roots), not lost nor followed forever."""
    services.spans_ingest(rows=[row(8, 1, parent=2, name="a"), row(8, 2, parent=1, name="b"), row(8, 3, parent=2)])
    body = client.get(f"/api/traces/{8:032x}/").json()
    assert sorted(s["name"] for s in body["spans"]) == ["a", "b", "op"]
    assert all(s["orphan"] for s in body["spans"])


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "-1", "1e999"])
def test_non_finite_or_negative_min_duration_is_a_400_on_the_api_and_ignored_by_the_pages(client, bad):
    """Ensure min_duration_ms=nan/inf/negative is refused by the API and ignored by the page and its partial."""
    services.spans_ingest(rows=[row(9, 1)])
    response = client.get(f"/api/traces/?min_duration_ms={bad}")
    assert response.status_code == 400 and "finite" in response.json()["message"]
    assert client.get(f"/traces/?min_duration_ms={bad}").status_code == 200
    partial = client.get(f"/partials/traces/?min_duration_ms={bad}")
    assert partial.status_code == 200 and f"{9:032x}"[:8] in partial.content.decode()


def test_waterfall_span_names_wrap_after_slashes_and_stay_escaped():
    """Ensure a long span name may wrap only after a ``/`` (reserve and commit differ at the end), escaped."""
    from console.templatetags.console_tags import break_after_slashes

    wrapped = break_after_slashes("POST internal/reservations/<uuid:reservation_id>/commit/")
    assert wrapped == "POST internal/<wbr>reservations/<wbr>&lt;uuid:reservation_id&gt;/<wbr>commit/<wbr>"
