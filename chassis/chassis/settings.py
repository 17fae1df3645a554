"""Settings shared by every lab service, read from the environment.

A service's ``config/settings.py`` calls :func:`build` once and adds what is
its own (apps, urlconf, extra settings)::

    from chassis.settings import build
    globals().update(build(service="inventory", base_dir=BASE_DIR, apps=["catalog"]))

Values come from the process environment first, then from
``$LAB_ROOT/var/env/<service>.env`` (written by ``labctl up``), then from
defaults that work on one machine. Everything the chassis itself reads lives
in the namespaced ``CHASSIS`` dict.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from . import parts


def lab_root(base_dir: Path) -> Path:
    """The repository root: ``LAB_ROOT`` or the parent of the service dir."""
    return Path(os.environ.get("LAB_ROOT") or Path(base_dir).resolve().parent)


def peer_urls(env: environ.Env) -> dict[str, str]:
    """Base URL of every service, by short name, from ``<NAME>_SERVICE_URL``."""
    return {app.name: env.str(app.env_var, default=app.default_url).rstrip("/") for app in parts.APPS}


def _shifted_redis_db(url: str, offset: int, *, absolute: int | None = None) -> str:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    current = int(parsed.path.lstrip("/") or 0) if absolute is None else absolute
    return parsed._replace(path=f"/{(current + offset) % 16}").geturl()


def own_keys_dir(keys_dir: Path, service: str) -> Path:
    """The service's own keys dir: its private key and every identity's public key, no other private key.

    ``LAB_KEYS_DIR`` names it (``var/keys/<service>`` by default). An env file written before each
    identity had a dir of its own names ``var/keys`` itself: then its ``<service>/`` subdir is meant.
    """
    if not (keys_dir / f"{service}.private.pem").exists() and (keys_dir / service / f"{service}.private.pem").exists():
        return keys_dir / service
    return keys_dir


_RATE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")


def _rate(env: environ.Env, name: str, default: str) -> str:
    """A throttle rate such as ``20/s`` or ``300/min`` from the environment; a malformed one fails at start."""
    value = env.str(name, default=default).strip()
    if not _RATE.match(value):
        raise ImproperlyConfigured(
            f"{name} must look like '10/min' (a count, '/', then s, min, hour or day); got {value!r}."
        )
    return value


def _revocation_cache(env: environ.Env, root: Path, redis_url: str, service: str) -> dict:
    """The cache every service shares for revoked access tokens: the user service's Redis database.

    ``TOKEN_REVOCATION_REDIS_URL`` names it; by default it is ``REDIS_URL``'s server with the
    database of the user service (the issuer), so each service finds the list whatever its own
    database number. Without Redis, a file cache under ``var/cache/`` that every process of the
    machine shares. A test run keeps a list of its own, per service, away from the lab's
    and from another suite running at the same time.
    """
    url = env.str("TOKEN_REVOCATION_REDIS_URL", default="")
    if not url and redis_url:
        url = _shifted_redis_db(redis_url, 0, absolute=parts.APP_BY_NAME["user"].redis_db)
    testing = "PYTEST_VERSION" in os.environ
    prefix = f"{env.str('LAB_REDIS_PREFIX', default='lab')}:auth"
    if url:
        if testing:
            url = _shifted_redis_db(url, 8)  # beside the services' own test databases, never the lab's
            prefix = f"{prefix}:test-{service}"
        return {
            "BACKEND": "chassis.cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": prefix,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    return {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(root / "var" / "cache" / (f"test-revocations-{service}" if testing else "revocations")),
    }


def _secret_from_file(name: str, path: str) -> str:
    """The secret in the file the variable ``name`` points at; a missing or empty file fails at start."""
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}={path}: cannot read it ({exc.strerror}).") from exc
    if not value:
        raise ImproperlyConfigured(f"{name}={path}: the file is empty.")
    return value


def build(
    *,
    service: str,
    base_dir: Path,
    apps: list[str],
    title: str,
    description: str = "",
    django_auth: bool = False,
    depends_on: tuple[str, ...] = (),
) -> dict:
    """Return the settings of one service as a dict of Django setting names.

    ``django_auth`` installs ``django.contrib.auth`` (user_service only: the
    other services know users from their JWT and keep no user table).
    ``depends_on`` names the peers this service calls (their breakers are shown).
    """
    root = lab_root(base_dir)
    env = environ.Env()
    env_file = root / "var" / "env" / f"{service}.env"
    if env_file.exists():
        environ.Env.read_env(str(env_file), overwrite=False)

    debug = env.bool("DEBUG", default=False)
    secret_key = env.str("DJANGO_SECRET_KEY", default="")
    secret_file = env.str("DJANGO_SECRET_KEY_FILE", default="")
    if not secret_key and secret_file:
        # docker-compose: a random key its keys job wrote on first start, in this service's keys dir.
        secret_key = _secret_from_file("DJANGO_SECRET_KEY_FILE", secret_file)
    if not secret_key:
        if not debug:
            raise ImproperlyConfigured(
                f"DJANGO_SECRET_KEY is not set for the {service} service: set it in the environment "
                f"or run `labctl setup` to write {env_file}."
            )
        secret_key = f"insecure-dev-key-{service}"

    (Path(base_dir) / "staticfiles").mkdir(exist_ok=True)  # WhiteNoise warns on every start without it
    sqlite_path = root / "var" / "db" / f"{service}.sqlite3"
    database = env.db_url("DATABASE_URL", default=f"sqlite:///{sqlite_path}")
    password_file = env.str("DATABASE_PASSWORD_FILE", default="")
    if password_file and not database.get("PASSWORD"):
        # docker-compose and Kubernetes: a random password the keys job wrote on first start.
        database["PASSWORD"] = _secret_from_file("DATABASE_PASSWORD_FILE", password_file)
    if database["ENGINE"] == "django.db.backends.sqlite3":
        Path(database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        database.setdefault("OPTIONS", {})["timeout"] = 20
        database["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    else:
        database.setdefault("OPTIONS", {}).update(
            {"charset": "utf8mb4", "isolation_level": "read committed", "connect_timeout": 3}
        )
        database["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
        database["CONN_HEALTH_CHECKS"] = True
        database["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default=f"test_{database['NAME']}")}
    database["ATOMIC_REQUESTS"] = False

    redis_url = env.str("REDIS_URL", default="")
    revocation = _revocation_cache(env, root, redis_url, service)
    if redis_url and "PYTEST_VERSION" in os.environ:
        # A test run must not see (or flush) the running lab's faults, switches and
        # throttle counts: it uses the Redis database 8 above the service's own.
        redis_url = _shifted_redis_db(redis_url, 8)
    if redis_url:
        cache = {
            "BACKEND": "chassis.cache.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"{env.str('LAB_REDIS_PREFIX', default='lab')}:{service}",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    else:
        # Without Redis a file cache still lets every worker process of the service
        # see the same faults, switches and throttle counts (slower, but shared).
        cache = {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(
                root / "var" / "cache" / (f"test-{service}" if "PYTEST_VERSION" in os.environ else service)
            ),
        }

    return {
        "BASE_DIR": Path(base_dir),
        "LAB_ROOT": root,
        "SERVICE_NAME": service,
        "DEBUG": debug,
        "SECRET_KEY": secret_key,
        "ALLOWED_HOSTS": env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"]),
        "INSTALLED_APPS": [
            "django.contrib.contenttypes",
            *(["django.contrib.auth"] if django_auth else []),
            "django.contrib.staticfiles",
            "rest_framework",
            "drf_spectacular",
            "drf_spectacular_sidecar",  # Swagger UI served by the service itself: the lab works offline
            "chassis",
            *apps,
        ],
        "MIDDLEWARE": [
            # LAB_METRICS=off exists to measure what the metrics cost (loadtests/overhead.py).
            *(["chassis.metrics.MetricsMiddleware"] if env.bool("LAB_METRICS", default=True) else []),
            "chassis.requestid.RequestIdMiddleware",
            # Before anything else works on a request: a passed X-Request-Deadline is shed at once.
            "chassis.deadline.DeadlineMiddleware",
            "chassis.lab.faults.FaultInjectionMiddleware",
            "django.middleware.security.SecurityMiddleware",
            "whitenoise.middleware.WhiteNoiseMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
            "chassis.errors.DatabaseUnavailableMiddleware",
        ],
        "ROOT_URLCONF": "config.urls",
        "WSGI_APPLICATION": "config.wsgi.application",
        "TEMPLATES": [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [],
                "APP_DIRS": True,
                "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
            }
        ],
        "DATABASES": {"default": database},
        "CACHES": {"default": cache},
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "LANGUAGE_CODE": "en-us",
        "STATIC_URL": "/static/",
        "STATIC_ROOT": Path(base_dir) / "staticfiles",
        "STORAGES": {
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
        },
        # A redirect would drop a POST body (and DEBUG turns it into a 500): answer 404 with a hint instead.
        "APPEND_SLASH": False,
        "DATA_UPLOAD_MAX_MEMORY_SIZE": 256 * 1024,
        "REST_FRAMEWORK": {
            # The cookie of the browsable API's login counts on its HTML pages only (chassis.browsable).
            "DEFAULT_AUTHENTICATION_CLASSES": [
                "chassis.auth.LabJWTAuthentication",
                "chassis.browsable.BrowsableCookieAuthentication",
            ],
            "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
            "DEFAULT_PAGINATION_CLASS": "chassis.pagination.LabPagination",
            "PAGE_SIZE": 20,
            "DEFAULT_SCHEMA_CLASS": "chassis.schema.LabAutoSchema",
            "EXCEPTION_HANDLER": "chassis.errors.exception_handler",
            "DEFAULT_PARSER_CLASSES": [
                "chassis.parsers.SafeJSONParser",
                "rest_framework.parsers.FormParser",
                "rest_framework.parsers.MultiPartParser",
            ],
            "DEFAULT_RENDERER_CLASSES": [
                "rest_framework.renderers.JSONRenderer",
                "chassis.browsable.LabBrowsableAPIRenderer",
            ],
            "UNAUTHENTICATED_USER": "chassis.auth.anonymous_user",
            # Every write of a logged-in user is counted (chassis.throttling); views add their own limits.
            "DEFAULT_THROTTLE_CLASSES": ["chassis.throttling.UserWriteThrottle"],
            "DEFAULT_THROTTLE_RATES": {},
        },
        "SPECTACULAR_SETTINGS": {
            "TITLE": title,
            "DESCRIPTION": description,
            "VERSION": "1.0.0",
            "SERVE_INCLUDE_SCHEMA": False,
            "COMPONENT_SPLIT_REQUEST": True,
            "SWAGGER_UI_DIST": "SIDECAR",
            "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
            "REDOC_DIST": "SIDECAR",
        },
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": "chassis.requestid.RequestIdLogFilter"}},
            "formatters": {
                "lab": {"format": f"%(asctime)s %(levelname)s {service} [%(request_id)s] %(name)s: %(message)s"}
            },
            "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["request_id"], "formatter": "lab"}},
            "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
            "loggers": {"django.server": {"level": "WARNING"}},
        },
        "CHASSIS": {
            "SERVICE": service,
            "PEERS": peer_urls(env),
            "KEYS_DIR": own_keys_dir(
                Path(env.str("LAB_KEYS_DIR", default=str(root / "var" / "keys" / service))), service
            ),
            "SERVICE_TOKEN_TTL": env.int("SERVICE_TOKEN_TTL", default=60),
            "CONNECT_TIMEOUT": env.float("CLIENT_CONNECT_TIMEOUT", default=1.0),
            "READ_TIMEOUT": env.float("CLIENT_READ_TIMEOUT", default=5.0),
            "RETRY_ATTEMPTS": env.int("CLIENT_RETRY_ATTEMPTS", default=3),
            "RETRY_BACKOFF": env.float("CLIENT_RETRY_BACKOFF", default=0.1),
            "BREAKER_FAIL_MAX": env.int("BREAKER_FAIL_MAX", default=5),
            "BREAKER_RESET_TIMEOUT": env.int("BREAKER_RESET_TIMEOUT", default=10),
            # 0: half the threads of each gunicorn worker (chassis.lab.resilience.default_bulkhead).
            "BULKHEAD_MAX_CONCURRENT": env.int("BULKHEAD_MAX_CONCURRENT", default=0),
            # How long a call waits for a free slot of the bulkhead before it is turned away.
            "BULKHEAD_WAIT_SECONDS": env.float("BULKHEAD_WAIT_SECONDS", default=0.5),
            "LAB_STATE_REFRESH": env.float("LAB_STATE_REFRESH", default=0.5),
            # Several labs (a test run beside the running one) can share one Redis.
            "REDIS_PREFIX": env.str("LAB_REDIS_PREFIX", default="lab"),
            "DEPENDS_ON": list(depends_on),
            # Where user_service records revoked access tokens and every verifier reads them (chassis.revocation).
            "REVOCATION_CACHE": revocation,
            # Writes (POST, PUT, PATCH, DELETE) a logged-in user may make per service (chassis.throttling).
            "WRITE_RATE_PER_USER": _rate(env, "WRITE_RATE_PER_USER", "20/s"),
        },
    }
