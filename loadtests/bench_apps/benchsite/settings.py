"""Settings of the baseline project: the least Django needs, database from BENCH_DATABASE_URL."""

import os
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = os.environ.get("BENCH_SECRET_KEY", "bench-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "benchsite.urls"
WSGI_APPLICATION = "benchsite.wsgi.application"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework", "benchsite"]
MIDDLEWARE = []
USE_TZ = True


def _database(url: str) -> dict:
    parsed = urlparse(url)
    if parsed.scheme.startswith("mysql"):
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": parsed.path.lstrip("/"),
            "USER": parsed.username or "root",
            "PASSWORD": parsed.password or "",
            "HOST": parsed.hostname or "127.0.0.1",
            "PORT": str(parsed.port or 3306),
            "OPTIONS": {"charset": "utf8mb4", "isolation_level": "read committed"},
            "CONN_MAX_AGE": 60,  # as the lab's services
        }
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": parsed.path or str(BASE_DIR / "bench.sqlite3")}


DATABASES = {"default": _database(os.environ.get("BENCH_DATABASE_URL", "sqlite:///" + str(BASE_DIR / "bench.sqlite3")))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,  # as the lab's catalog
}
