"""The lab's one list of its parts: every name, port, schema and Redis database belongs to one part only."""

from chassis import parts


def test_each_part_has_its_own_name_port_schema_and_redis_db():
    """Ensure no two parts share a name, a directory, a port, a schema or a Redis database."""
    for field in ("name", "directory", "port", "schema", "redis_db", "label"):
        values = [getattr(app, field) for app in parts.APPS]
        assert len(set(values)) == len(values), field


def test_the_dashboard_is_an_app_but_not_a_service():
    """Ensure the services are the four shop services and the apps add the dashboard last."""
    assert parts.SERVICE_NAMES == ("user", "order", "inventory", "payment")
    assert parts.APPS[-1] is parts.DASHBOARD
    assert parts.DASHBOARD not in parts.SERVICES
    assert parts.APP_BY_NAME["payment"].env_var == "PAYMENT_SERVICE_URL"
    assert parts.APP_BY_NAME["dashboard"].default_url == "http://127.0.0.1:8000"


def test_the_default_saga_mode_is_one_of_the_modes():
    """Ensure the default saga mode is a mode the order service accepts."""
    assert parts.DEFAULT_SAGA_MODE in parts.SAGA_MODES == ("sync", "async")
