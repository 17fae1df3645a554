"""``GET /health/``: is this service alive, and can it reach what it needs?

Answers 200 when every check passes and 503 otherwise, with one entry per
check so a student (or the dashboard) sees *which* dependency is the problem.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from .lab.faults import faults_active


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check() or {}
        result = {"status": "ok", **detail}
    except Exception as exc:  # noqa: BLE001 — any failure of a dependency is reported, not raised
        result = {"status": "down", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"engine": connection.vendor, "name": str(connection.settings_dict["NAME"]).rsplit("/", 1)[-1]}


def check_cache() -> dict:
    backend = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    cache.set("health:probe", "1", timeout=5)
    if cache.get("health:probe") != "1":
        raise RuntimeError("cache did not return the value just written")
    return {"backend": backend}


CHECKS = {"database": check_database, "cache": check_cache}


@csrf_exempt  # no cookies here; a wrong method must be a 405, not a CSRF 403
@require_safe
def health(request):
    checks = {name: _timed(check) for name, check in CHECKS.items()}
    healthy = all(c["status"] == "ok" for c in checks.values())
    body = {
        "service": settings.SERVICE_NAME,
        "status": "ok" if healthy else "down",
        "checks": checks,
        "faults": faults_active(),
    }
    return JsonResponse(body, status=200 if healthy else 503)
