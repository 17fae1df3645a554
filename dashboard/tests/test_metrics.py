"""The metrics summary: rates, error ratio and percentiles from two known Prometheus scrapes."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from collector import metrics


def scrape(
    *, ok: int, errors: int, health: int, buckets: dict, total_sum: float, breaker: int = 0, retries: int = 0
) -> str:
    """Prometheus text as a service serves it (two routes; /health/ must not count)."""
    lines = [
        "# HELP lab_http_requests_total Requests served, by route and status.",
        "# TYPE lab_http_requests_total counter",
        f'lab_http_requests_total{{method="POST",route="/api/orders/",status="201"}} {ok}',
        f'lab_http_requests_total{{method="POST",route="/api/orders/",status="503"}} {errors}',
        f'lab_http_requests_total{{method="GET",route="/health/",status="200"}} {health}',
        f'lab_http_requests_total{{method="GET",route="/_lab/faults/",status="200"}} {health}',
        "# HELP lab_http_request_duration_seconds Time to serve a request, by route.",
        "# TYPE lab_http_request_duration_seconds histogram",
    ]
    for le, count in buckets.items():
        lines.append(f'lab_http_request_duration_seconds_bucket{{le="{le}",route="/api/orders/"}} {count}')
        lines.append(f'lab_http_request_duration_seconds_bucket{{le="{le}",route="/health/"}} {health}')
    lines += [
        f'lab_http_request_duration_seconds_count{{route="/api/orders/"}} {buckets["+Inf"]}',
        f'lab_http_request_duration_seconds_sum{{route="/api/orders/"}} {total_sum}',
        f'lab_http_request_duration_seconds_count{{route="/health/"}} {health}',
        f'lab_http_request_duration_seconds_sum{{route="/health/"}} {health * 0.002}',
        "# HELP lab_breaker_state Breaker state per peer: 0 closed, 1 half-open, 2 open.",
        "# TYPE lab_breaker_state gauge",
        f'lab_breaker_state{{peer="payment"}} {breaker}',
        "# HELP lab_retries_total Extra attempts made by the client, by peer.",
        "# TYPE lab_retries_total counter",
        f'lab_retries_total{{peer="payment"}} {retries}',
    ]
    return "\n".join(lines) + "\n"


FIRST = scrape(
    ok=100, errors=0, health=50, total_sum=1.0, buckets={"0.01": 10, "0.05": 50, "0.1": 90, "0.25": 100, "+Inf": 100}
)
# Ten seconds later: 60 more successes, 20 failures; of the 80 new requests 20 took ≤ 10 ms,
# 40 more ≤ 50 ms, 16 more ≤ 100 ms and the last 4 ≤ 250 ms. /health/ was polled 10 more times.
SECOND = scrape(
    ok=160,
    errors=20,
    health=60,
    total_sum=5.0,
    breaker=2,
    retries=6,
    buckets={"0.01": 30, "0.05": 110, "0.1": 166, "0.25": 180, "+Inf": 180},
)


def test_two_scrapes_give_rate_error_ratio_and_percentiles():
    """Ensure the numbers match a hand computation (linear interpolation inside a bucket, like Prometheus)."""
    samples = [metrics.sample_from_text(FIRST, ts=1000.0), metrics.sample_from_text(SECOND, ts=1010.0)]
    out = metrics.summarize(samples, now=1010.0, window=60)

    assert out["req_per_s"] == 8.0  # 80 requests in 10 s; /health/ and /_lab/ left out
    assert out["error_ratio"] == 0.25  # 20 of 80
    assert out["p50_ms"] == 30.0  # rank 40: 0.01 + 0.04 × (40 − 20) / (60 − 20)
    assert out["p95_ms"] == 100.0  # rank 76: the top of the 0.1 bucket
    assert out["p99_ms"] == 220.0  # rank 79.2: 0.1 + 0.15 × 3.2 / 4
    assert out["mean_ms"] == 50.0  # 4 s over 80 requests
    assert out["retries_per_s"] == 0.6
    assert out["breakers"] == {"payment": "open"}
    assert out["sparkline"] == [8.0]
    assert out["window_s"] == 10.0


def test_one_sample_is_not_enough():
    """Ensure a single scrape gives no rate rather than a wrong one."""
    out = metrics.summarize([metrics.sample_from_text(FIRST, ts=1000.0)], now=1000.0, window=60)
    assert out["req_per_s"] is None and out["p50_ms"] is None
    assert out["samples"] == 1


def test_a_restarted_service_does_not_give_negative_rates():
    """Ensure a counter reset (the service restarted) counts from zero instead of going negative."""
    restarted = scrape(
        ok=8, errors=2, health=1, total_sum=0.1, buckets={"0.01": 10, "0.05": 10, "0.1": 10, "0.25": 10, "+Inf": 10}
    )
    samples = [metrics.sample_from_text(SECOND, ts=1000.0), metrics.sample_from_text(restarted, ts=1005.0)]
    out = metrics.summarize(samples, now=1005.0, window=60)
    assert out["req_per_s"] == 2.0
    assert out["error_ratio"] == 0.2


def test_samples_outside_the_window_are_ignored():
    """Ensure the summary only compares samples of the last window."""
    samples = [
        metrics.sample_from_text(FIRST, ts=900.0),
        metrics.sample_from_text(FIRST, ts=1000.0),
        metrics.sample_from_text(SECOND, ts=1010.0),
    ]
    out = metrics.summarize(samples, now=1010.0, window=60)
    assert out["req_per_s"] == 8.0
    assert out["samples"] == 2


def test_no_traffic_means_no_error_ratio_and_no_percentile():
    """Ensure an idle service shows 0 req/s and no made-up latency."""
    samples = [metrics.sample_from_text(FIRST, ts=1000.0), metrics.sample_from_text(FIRST, ts=1002.0)]
    out = metrics.summarize(samples, now=1002.0, window=60)
    assert out["req_per_s"] == 0.0
    assert out["error_ratio"] is None and out["p95_ms"] is None


def test_unparsable_metrics_raise_a_scrape_error():
    """Ensure garbage from /metrics is reported, not crashed on."""
    with pytest.raises(metrics.ScrapeError):
        metrics.sample_from_text('lab_http_requests_total{route="/x" 12\n', ts=1.0)


def test_summary_scrapes_each_service_and_reports_a_dead_one(settings, monkeypatch):
    """Ensure scraping keeps samples per service in the cache and a failing one is reported as down."""
    texts = {"order": iter([FIRST, SECOND])}

    def fetch(service):
        if service == "payment":
            raise RuntimeError("unreachable (ConnectionError)")
        return next(texts.get(service, iter([FIRST, FIRST])))

    now = [1000.0]
    monkeypatch.setattr(metrics, "clock", lambda: now[0])
    metrics.summary(fetch, services=("order", "payment"))
    for service in ("order", "payment"):
        cache.delete(f"metrics:lock:{service}")  # the scrape throttle, in real seconds
    now[0] = 1010.0
    out = metrics.summary(fetch, services=("order", "payment"))["services"]

    assert out["order"]["up"] is True
    assert out["order"]["req_per_s"] == 8.0
    assert out["payment"]["up"] is False
    assert "unreachable" in out["payment"]["error"]
    assert out["payment"]["req_per_s"] is None


def test_summary_api_answers_even_when_every_service_is_down(client, dead_lab, db):
    """Ensure /api/metrics/summary/ is JSON with every service marked down, never a 500."""
    response = client.get("/api/metrics/summary/")
    assert response.status_code == 200
    services = response.json()["services"]
    assert set(services) == {"user", "order", "inventory", "payment"}
    assert all(s["up"] is False for s in services.values())
