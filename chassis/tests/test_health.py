import pytest


@pytest.mark.django_db
def test_health_ok(client):
    """Ensure /health/ reports each check and 200 when all pass."""
    response = client.get("/health/")
    body = response.json()
    assert response.status_code == 200
    assert body["service"] == "inventory"
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["cache"]["status"] == "ok"


@pytest.mark.django_db
def test_health_503_names_the_failing_check(client, settings):
    """Ensure an unreachable Redis turns /health/ into a 503 that says which check failed."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2},
        }
    }
    response = client.get("/health/")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "down"
    assert body["checks"]["cache"]["status"] == "down"
    assert "Connection" in body["checks"]["cache"]["error"]
    assert body["checks"]["database"]["status"] == "ok"


def test_wrong_method_on_health_and_metrics_is_405(client):
    """Ensure DELETE /health/ and POST /metrics are refused as methods, not as CSRF failures."""
    assert client.delete("/health/").status_code == 405
    assert client.post("/metrics").status_code == 405


def test_swagger_ui_is_served_without_internet(client):
    """Ensure /api/docs/ loads Swagger UI from the service's own static files, not a CDN."""
    page = client.get("/api/docs/").content.decode()
    assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
