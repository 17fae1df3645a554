"""/metrics counts what happened."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chassis.client import PeerUnavailable, ServiceClient
from chassis.testing import bearer, service_token


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_and_status(client):
    """Ensure each request moves the counter of its route pattern and the histogram."""
    before = scrape(client)
    for _ in range(3):
        client.post("/echo/", {"name": "a", "quantity": 1}, content_type="application/json")
    client.post("/echo/", {"name": "a", "quantity": 0}, content_type="application/json")
    after = scrape(client)
    assert (
        value(after, "lab_http_requests_total", method="POST", route="/echo/", status="201")
        - value(before, "lab_http_requests_total", method="POST", route="/echo/", status="201")
        == 3
    )
    assert (
        value(after, "lab_http_requests_total", method="POST", route="/echo/", status="400")
        - value(before, "lab_http_requests_total", method="POST", route="/echo/", status="400")
        == 1
    )
    assert (
        value(after, "lab_http_request_duration_seconds_count", route="/echo/")
        - value(before, "lab_http_request_duration_seconds_count", route="/echo/")
        == 4
    )


def test_fault_hits_and_peer_outcomes_are_counted(client, api, peer, settings):
    """Ensure injected faults, retries and peer outcomes show in /metrics, and metrics survive an outage."""
    settings.CHASSIS = {**settings.CHASSIS, "DEPENDS_ON": ["payment"]}
    admin = bearer(service_token(caller="dashboard", audience="inventory"))
    before = scrape(client)
    api.put("/_lab/faults/", {"kind": "outage"}, format="json", **admin)
    assert client.get("/whoami/").status_code == 503
    peer.script = [(503, None), (200, {})]
    ServiceClient("payment", base_url=peer.url).get("/x/")
    api.put("/_lab/faults/", {"kind": "dependency", "target": "payment", "mode": "fail"}, format="json", **admin)
    with pytest.raises(PeerUnavailable):
        ServiceClient("payment", base_url=peer.url).get("/x/")
    after = scrape(client)  # /metrics is not faulted: the outage stays observable
    assert (
        value(after, "lab_http_requests_total", method="GET", route="/whoami/", status="503")
        - value(before, "lab_http_requests_total", method="GET", route="/whoami/", status="503")
        == 1
    )
    assert (
        value(after, "lab_faults_injected_total", kind="outage")
        - value(before, "lab_faults_injected_total", kind="outage")
        == 1
    )
    assert (
        value(after, "lab_peer_calls_total", peer="payment", outcome="ok")
        - value(before, "lab_peer_calls_total", peer="payment", outcome="ok")
        == 1
    )
    assert (
        value(after, "lab_peer_calls_total", peer="payment", outcome="unavailable")
        - value(before, "lab_peer_calls_total", peer="payment", outcome="unavailable")
        == 1
    )
    assert value(after, "lab_retries_total", peer="payment") - value(before, "lab_retries_total", peer="payment") >= 3
    assert ("lab_breaker_state", (("peer", "payment"),)) in after


@pytest.mark.django_db
def test_sql_statements_are_counted_by_route(client):
    """Ensure lab_db_queries_total adds the statements a request ran to its route (the bench's query budget)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    before = scrape(client)
    with CaptureQueriesContext(connection) as queries:
        client.get("/health/")
    ran = len([q for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")])
    after = scrape(client)

    assert ran >= 1
    assert (
        value(after, "lab_db_queries_total", route="/health/") - value(before, "lab_db_queries_total", route="/health/")
        == ran
    )
