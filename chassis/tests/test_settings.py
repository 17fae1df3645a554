from chassis.settings import _shifted_redis_db


def test_test_runs_use_a_redis_database_apart_from_the_lab():
    """Ensure a test run's Redis database is shifted away from the running lab's."""
    assert _shifted_redis_db("redis://127.0.0.1:6379/1", 8) == "redis://127.0.0.1:6379/9"
    assert _shifted_redis_db("redis://127.0.0.1:6379", 8) == "redis://127.0.0.1:6379/8"
    assert _shifted_redis_db("redis://:pw@redis:6379/10", 8) == "redis://:pw@redis:6379/2"


def test_metrics_can_be_switched_off_for_the_overhead_measurement(monkeypatch, tmp_path):
    """Ensure LAB_METRICS=off removes the metrics middleware, and it is on by default."""
    from chassis.settings import build

    (tmp_path / "svc").mkdir()
    monkeypatch.setenv("DJANGO_SECRET_KEY", "x")
    monkeypatch.setenv("LAB_ROOT", str(tmp_path))
    assert (
        "chassis.metrics.MetricsMiddleware"
        in build(service="order", base_dir=tmp_path / "svc", apps=[], title="t")["MIDDLEWARE"]
    )
    monkeypatch.setenv("LAB_METRICS", "off")
    assert (
        "chassis.metrics.MetricsMiddleware"
        not in build(service="order", base_dir=tmp_path / "svc", apps=[], title="t")["MIDDLEWARE"]
    )
