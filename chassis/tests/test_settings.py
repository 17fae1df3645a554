import pytest

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


def test_database_password_comes_from_its_file(monkeypatch, tmp_path):
    """Ensure DATABASE_PASSWORD_FILE fills in the password a DATABASE_URL without one leaves out."""
    from chassis.settings import build

    (tmp_path / "svc").mkdir()
    (tmp_path / "database-password").write_text("s3cret-from-the-keys-job\n")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "x")
    monkeypatch.setenv("LAB_ROOT", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "mysql://lab_orders@mysql:3306/lab_orders")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "database-password"))
    database = build(service="order", base_dir=tmp_path / "svc", apps=[], title="t")["DATABASES"]["default"]
    assert (database["USER"], database["PASSWORD"], database["NAME"]) == (
        "lab_orders",
        "s3cret-from-the-keys-job",
        "lab_orders",
    )


def test_a_missing_secret_file_fails_at_start_with_its_name(monkeypatch, tmp_path):
    """Ensure a *_FILE variable pointing at no file, or an empty one, fails with the variable's name."""
    from django.core.exceptions import ImproperlyConfigured

    from chassis.settings import build

    (tmp_path / "svc").mkdir()
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "x")
    monkeypatch.setenv("LAB_ROOT", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "mysql://lab_orders@mysql:3306/lab_orders")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(ImproperlyConfigured, match="DATABASE_PASSWORD_FILE=.*absent: cannot read it"):
        build(service="order", base_dir=tmp_path / "svc", apps=[], title="t")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "empty"))
    with pytest.raises(ImproperlyConfigured, match="DATABASE_PASSWORD_FILE=.*empty: the file is empty"):
        build(service="order", base_dir=tmp_path / "svc", apps=[], title="t")
