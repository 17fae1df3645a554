"""What ties the worker to the rest: the broker in /health/ and /metrics, outcomes counted, one trace per checkout."""

import os
import time

import pytest
from celery.contrib.testing.worker import start_worker
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from chassis import telemetry
from config.celery import app
from orders.models import Order, OrderStatus
from tests.conftest import order_body, place

pytestmark = pytest.mark.django_db


def scrape(client) -> dict:
    samples = {}
    for family in text_string_to_metric_families(client.get("/metrics").content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


# --- the broker in /health/ and /metrics --------------------------------------------------------


def test_health_names_the_broker(client):
    """Ensure /health/ has a broker check saying which transport is in use."""
    body = client.get("/health/").json()

    assert body["checks"]["broker"]["status"] == "ok"
    assert body["checks"]["broker"]["transport"] == "memory"


def test_without_redis_the_embedded_broker_is_reported(client, settings, tmp_path):
    """Ensure the filesystem broker is named as the embedded one, and a folder it cannot write to is a 503."""
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_FOLDER = tmp_path
    (tmp_path / "queue").mkdir()

    healthy = client.get("/health/")

    assert healthy.status_code == 200
    broker = healthy.json()["checks"]["broker"]
    assert (broker["transport"], broker["embedded"], broker["folder"]) == ("filesystem", True, str(tmp_path))
    assert "No Redis" in broker["note"]

    settings.CELERY_BROKER_FOLDER = tmp_path / "missing"
    broken = client.get("/health/")

    assert broken.status_code == 503
    assert broken.json()["checks"]["broker"]["status"] == "down"


def test_an_unreachable_redis_broker_makes_health_503(client, settings):
    """Ensure a Redis broker that does not answer shows as down (and /_lab/saga/ still answers)."""
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    response = client.get("/health/")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"] == "down"
    assert response.json()["checks"]["broker"]["error"].startswith("ConnectionError")


def test_queue_depth_is_read_from_redis(client, settings, dashboard):
    """Ensure the gauge and /_lab/saga/ count the tasks waiting in the Redis queues."""
    cache = settings.CACHES["default"]
    if not cache["BACKEND"].endswith("RedisCache"):
        pytest.skip("needs Redis (REDIS_URL)")
    settings.CELERY_BROKER_URL = cache["LOCATION"]  # this test run's own Redis database
    prefix = f"lab:test-{os.getpid()}:celery:"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": prefix}
    import redis

    connection = redis.Redis.from_url(cache["LOCATION"])
    connection.rpush(f"{prefix}saga", "a", "b", "c")
    connection.rpush(f"{prefix}beat", "d")
    connection.rpush("saga", "another lab's task")  # not ours: another prefix
    try:
        samples = scrape(client)
        switch = dashboard.get("/_lab/saga/").json()
    finally:
        connection.delete(f"{prefix}saga", f"{prefix}beat")
        connection.lrem("saga", 1, "another lab's task")

    assert samples[("lab_celery_queue_depth", (("queue", "saga"),))] == 3
    assert samples[("lab_celery_queue_depth", (("queue", "beat"),))] == 1
    assert (switch["broker"], switch["queues"]) == ("redis", {"saga": 3, "beat": 1})


def test_without_redis_there_is_no_queue_depth_sample(client):
    """Ensure the gauge has no sample (rather than a made-up 0) when the broker is not Redis."""
    assert not any(name == "lab_celery_queue_depth" for name, _ in scrape(client))


def test_saga_outcomes_are_counted_by_kind(client, alice, fake_inventory):
    """Ensure each saga that ends adds one to lab_saga_outcomes_total: confirmed, or cancelled_<kind>."""
    before = scrape(client)
    place(alice)
    place(alice, order_body(lines=[{"sku": "MN-003", "quantity": 3}]))  # 2 in stock
    after = scrape(client)

    def delta(outcome):
        key = ("lab_saga_outcomes_total", (("outcome", outcome),))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("confirmed") == 1
    assert delta("cancelled_out_of_stock") == 1


def test_a_metrics_directory_gone_does_not_break_a_saga(alice, monkeypatch):
    """Ensure a saga still ends (and answers) when its outcome cannot be written to the metrics files."""
    from chassis import metrics

    def gone(*_labels):
        raise FileNotFoundError(2, "No such file or directory", "/run/prometheus/order/counter_123.db")

    monkeypatch.setattr(metrics.SAGA_OUTCOMES, "labels", gone)

    response = place(alice)

    assert response.status_code == 201 and response.data["status"] == "CONFIRMED"


# --- a real (embedded) worker: request id and trace context travel with the task ----------------

EXPORTER = InMemorySpanExporter()


@pytest.mark.django_db(transaction=True)
def test_one_checkout_is_one_trace_from_the_request_through_the_worker(alice, async_saga, fake_inventory, fake_payment):
    """Ensure the task published by the request carries its trace and request id into the worker's saga spans."""
    telemetry.setup("order", exporter=EXPORTER, instrument_django=False)
    EXPORTER.clear()

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        with telemetry.span("test.request") as request_span:
            response = alice.post(
                "/api/orders/",
                order_body(),
                format="json",
                HTTP_IDEMPOTENCY_KEY="trace-key-0001",
                HTTP_X_REQUEST_ID="req-async-trace-1",
            )
        assert response.status_code == 202
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if Order.objects.get(pk=response.data["id"]).status != OrderStatus.PENDING:
                break
            time.sleep(0.1)

    assert Order.objects.get(pk=response.data["id"]).status == OrderStatus.CONFIRMED
    trace_id = request_span.get_span_context().trace_id
    spans = {span.name: span for span in EXPORTER.get_finished_spans()}
    for name in ("apply_async/orders.saga_run", "run/orders.saga_run", "saga.reserve", "saga.charge", "saga.commit"):
        assert name in spans, sorted(spans)
        assert spans[name].context.trace_id == trace_id, name
    assert spans["saga.charge"].attributes["lab.request_id"] == "req-async-trace-1"
    assert spans["saga.charge"].attributes["order.id"] == response.data["id"]
