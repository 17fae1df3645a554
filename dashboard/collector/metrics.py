"""Live numbers per service from its Prometheus ``/metrics``: rate, error ratio, latency percentiles.

A scrape is reduced to a small *sample* (counter totals and histogram buckets
summed over routes); samples are kept, timestamped, in the cache for a couple
of minutes; the summary compares the newest sample with the oldest one of the
last minute — the way Prometheus' ``rate()`` and ``histogram_quantile()`` do.

Requests the lab makes to watch itself (``/health/``, ``/metrics``, ``/_lab/``,
the audit's ``/internal/reconciliation/``)
are left out of the traffic numbers: an idle lab shows 0 req/s, not the
dashboard's own polling.
"""

from __future__ import annotations

import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.cache import cache
from prometheus_client.parser import text_string_to_metric_families

from chassis import parts

SERVICES = parts.SERVICE_NAMES
INTERNAL_ROUTES = ("/health", "/metrics", "/_lab", "/static", "/internal/reconciliation", "unmatched")
BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}
clock = time.time  # injectable in tests


class ScrapeError(Exception):
    pass


def _internal(route: str) -> bool:
    route = route or ""
    return route.startswith(INTERNAL_ROUTES) or ("/" + route.lstrip("/")).startswith(INTERNAL_ROUTES)


def _le(value: str) -> float:
    return math.inf if value in ("+Inf", "Inf", "inf") else float(value)


def sample_from_text(text: str, *, ts: float) -> dict:
    """Reduce one scrape to the totals the summary needs. Raises ``ScrapeError`` on unparsable text."""
    sample = {
        "ts": ts,
        "requests": 0.0,
        "errors": 0.0,
        "buckets": {},
        "latency_sum": 0.0,
        "latency_count": 0.0,
        "breakers": {},
        "retries": {},
        "peer_calls": {},
        "faults": {},
        "saga": {},
        "queue_depth": None,
    }
    buckets: dict[float, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:
        raise ScrapeError(f"unparsable /metrics: {exc}") from exc
    for family in families:
        for s in family.samples:
            name, labels, value = s.name, s.labels, float(s.value)
            if name == "lab_http_requests_total":
                if _internal(labels.get("route", "")):
                    continue
                sample["requests"] += value
                if labels.get("status", "").startswith("5"):
                    sample["errors"] += value
            elif name == "lab_http_request_duration_seconds_bucket":
                if not _internal(labels.get("route", "")):
                    le = _le(labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + value
            elif name == "lab_http_request_duration_seconds_sum":
                if not _internal(labels.get("route", "")):
                    sample["latency_sum"] += value
            elif name == "lab_http_request_duration_seconds_count":
                if not _internal(labels.get("route", "")):
                    sample["latency_count"] += value
            elif name == "lab_breaker_state":
                sample["breakers"][labels.get("peer", "?")] = BREAKER_STATES.get(int(value), "closed")
            elif name == "lab_retries_total":
                peer = labels.get("peer", "?")
                sample["retries"][peer] = sample["retries"].get(peer, 0.0) + value
            elif name == "lab_peer_calls_total":
                key = f"{labels.get('peer', '?')}:{labels.get('outcome', '?')}"
                sample["peer_calls"][key] = sample["peer_calls"].get(key, 0.0) + value
            elif name == "lab_faults_injected_total":
                kind = labels.get("kind", "?")
                sample["faults"][kind] = sample["faults"].get(kind, 0.0) + value
            elif name == "lab_saga_outcomes_total":
                outcome = labels.get("outcome", "?")
                sample["saga"][outcome] = sample["saga"].get(outcome, 0.0) + value
            elif name == "lab_celery_queue_depth":
                sample["queue_depth"] = (sample["queue_depth"] or 0) + value
    # JSON (the cache) cannot hold an infinite key: keep bounds as strings.
    sample["buckets"] = {("+Inf" if le == math.inf else repr(le)): v for le, v in sorted(buckets.items())}
    return sample


def _delta(new: float, old: float) -> float:
    """Counter increase between two scrapes; a restarted process starts again from zero."""
    return new - old if new >= old else new


def _delta_map(new: dict, old: dict) -> dict:
    return {k: _delta(v, old.get(k, 0.0)) for k, v in new.items()}


def quantile(q: float, bucket_deltas: dict) -> float | None:
    """``histogram_quantile``: the q-quantile, in seconds, of cumulative bucket increases (linear within a bucket)."""
    bounds = sorted((_le(le), count) for le, count in bucket_deltas.items())
    if not bounds or bounds[-1][0] != math.inf:
        return None
    total = bounds[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if bound == math.inf:
                return lower_bound  # beyond the last finite bucket: the best we can say
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def summarize(samples: list[dict], *, now: float, window: float) -> dict:
    """Numbers over the last ``window`` seconds from timestamped samples (oldest first)."""
    recent = [s for s in samples if s["ts"] >= now - window - 0.001]
    out = {
        "samples": len(recent),
        "req_per_s": None,
        "error_ratio": None,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "mean_ms": None,
        "retries_per_s": None,
        "sparkline": [],
        "breakers": recent[-1]["breakers"] if recent else {},
        "faults_injected": {},
        "saga_outcomes": {},
        "queue_depth": recent[-1]["queue_depth"] if recent else None,
        "window_s": None,
    }
    if len(recent) < 2:
        return out
    first, last = recent[0], recent[-1]
    span = last["ts"] - first["ts"]
    if span <= 0:
        return out
    requests = _delta(last["requests"], first["requests"])
    errors = _delta(last["errors"], first["errors"])
    out["window_s"] = round(span, 1)
    out["req_per_s"] = round(requests / span, 3)
    out["error_ratio"] = round(errors / requests, 4) if requests > 0 else None
    buckets = _delta_map(last["buckets"], first["buckets"])
    for q, key in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
        value = quantile(q, buckets)
        out[key] = round(value * 1000, 1) if value is not None else None
    count = _delta(last["latency_count"], first["latency_count"])
    if count > 0:
        out["mean_ms"] = round(_delta(last["latency_sum"], first["latency_sum"]) / count * 1000, 1)
    out["retries_per_s"] = round(sum(_delta_map(last["retries"], first["retries"]).values()) / span, 3)
    out["faults_injected"] = {k: v for k, v in _delta_map(last["faults"], first["faults"]).items() if v}
    out["saga_outcomes"] = {k: v for k, v in _delta_map(last["saga"], first["saga"]).items() if v}
    out["sparkline"] = [
        round(_delta(b["requests"], a["requests"]) / (b["ts"] - a["ts"]), 3)
        for a, b in itertools.pairwise(recent)
        if b["ts"] > a["ts"]
    ]
    return out


# --- scraping ----------------------------------------------------------------

_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="scrape")


def _key(service: str) -> str:
    return f"metrics:samples:{service}"


def _status_key(service: str) -> str:
    return f"metrics:status:{service}"


def scrape_one(service: str, fetch) -> None:
    """Scrape ``service`` unless another request did within ``METRICS_MIN_INTERVAL``; store the sample."""
    if not cache.add(f"metrics:lock:{service}", 1, timeout=max(1, int(settings.METRICS_MIN_INTERVAL))):
        return
    now = clock()
    try:
        sample = sample_from_text(fetch(service), ts=now)
    except Exception as exc:  # noqa: BLE001 — a dead, slow or odd service is a status, not a crash
        cache.set(_status_key(service), {"up": False, "error": str(exc)[:200], "at": now}, timeout=600)
        return
    samples = [s for s in (cache.get(_key(service)) or []) if s["ts"] >= now - settings.METRICS_KEEP_SECONDS]
    samples.append(sample)
    cache.set(_key(service), samples, timeout=settings.METRICS_KEEP_SECONDS + 30)
    cache.set(_status_key(service), {"up": True, "error": None, "at": now}, timeout=600)


def summary(fetch, *, services=SERVICES, scrape: bool = True) -> dict:
    """Scrape (in parallel, each bounded by the fetch's timeout) and summarize every service."""
    if scrape:
        futures = [_pool.submit(scrape_one, name, fetch) for name in services]
        for future in futures:
            try:
                future.result(timeout=settings.METRICS_SCRAPE_TIMEOUT + 1.0)
            except Exception:  # noqa: BLE001 — a stuck scrape shows as stale, the page still answers
                pass
    now = clock()
    result = {}
    for name in services:
        status = cache.get(_status_key(name)) or {"up": None, "error": "not scraped yet", "at": None}
        samples = cache.get(_key(name)) or []
        result[name] = {**summarize(samples, now=now, window=settings.METRICS_WINDOW_SECONDS), **status}
    return {"window_seconds": settings.METRICS_WINDOW_SECONDS, "at": now, "services": result}
