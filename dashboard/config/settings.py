"""Settings of the lab dashboard: the chassis defaults plus sessions, pages and the trace collector.

Every value comes from the environment (see ``.env.example``); the chassis
reads ``var/env/dashboard.env`` first, so the variables below see it too.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from chassis import parts
from chassis.settings import build

BASE_DIR = Path(__file__).resolve().parent.parent

globals().update(
    build(
        service="dashboard",
        base_dir=BASE_DIR,
        apps=["django.contrib.sessions", "django.contrib.messages", "collector", "console"],
        title="Lab dashboard",
        description="The lab's control room: service map, faults, resilience switches, flows and traces, data, audit.",
        depends_on=parts.SERVICE_NAMES,
    )
)

env = environ.Env()

# Nobody can inject a fault into the dashboard (it serves no /_lab/ API), so its
# fault middleware would only cost a cache read per request. Sessions, CSRF and
# messages are what a browser-facing site needs on top of the chassis stack.
MIDDLEWARE = [m for m in MIDDLEWARE if m != "chassis.lab.faults.FaultInjectionMiddleware"]  # noqa: F821
# After WhiteNoise, so static files never touch the session table.
MIDDLEWARE.insert(
    MIDDLEWARE.index("whitenoise.middleware.WhiteNoiseMiddleware") + 1,
    "django.contrib.sessions.middleware.SessionMiddleware",
)
MIDDLEWARE += [
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "console.security.ContentSecurityPolicyMiddleware",
]

TEMPLATES[0]["OPTIONS"]["context_processors"] += [  # noqa: F821
    "django.template.context_processors.csrf",
    "django.contrib.messages.context_processors.messages",
    "console.context.lab",
]

# The login keeps the staff member's tokens in a signed, server-side session
# (the dashboard's own database), for a workshop day.
SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_NAME = "lab_dashboard_session"
CSRF_COOKIE_NAME = "lab_dashboard_csrftoken"
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
X_FRAME_OPTIONS = "DENY"

# Anonymous visitors may watch (overview, traces) when true; every control
# still needs a staff login. False: everything but the login page needs one.
DASHBOARD_PUBLIC_READ = env.bool("DASHBOARD_PUBLIC_READ", default=True)

# The dashboard's own calls to the services (health, faults, switches) must
# never hang a page: a slow or dead service shows as "timeout" / "down".
DASHBOARD_CONNECT_TIMEOUT = env.float("DASHBOARD_CONNECT_TIMEOUT", default=0.5)
DASHBOARD_READ_TIMEOUT = env.float("DASHBOARD_READ_TIMEOUT", default=1.5)
if DASHBOARD_READ_TIMEOUT > 1.5 or DASHBOARD_CONNECT_TIMEOUT > DASHBOARD_READ_TIMEOUT:
    raise ImproperlyConfigured(
        "DASHBOARD_READ_TIMEOUT must be at most 1.5 s and DASHBOARD_CONNECT_TIMEOUT at most the read timeout: "
        "the overview polls every 2 s."
    )
# Flows are a customer's journey: they wait as long as a patient client would,
# so an injected 800 ms latency shows as latency, not as a dashboard timeout.
DASHBOARD_FLOW_TIMEOUT = env.float("DASHBOARD_FLOW_TIMEOUT", default=10.0)

# The Audit page: anonymous visitors share one audit at most this old; each audit walks at most this
# many pages (of 1000 rows) per reconciliation endpoint; anonymous reads are limited per client IP.
DASHBOARD_AUDIT_FRESH_SECONDS = env.int("DASHBOARD_AUDIT_FRESH_SECONDS", default=15)
DASHBOARD_AUDIT_MAX_PAGES = env.int("DASHBOARD_AUDIT_MAX_PAGES", default=20)
DASHBOARD_AUDIT_ANONYMOUS_PER_WINDOW = env.int("DASHBOARD_AUDIT_ANONYMOUS_PER_WINDOW", default=10)
DASHBOARD_AUDIT_ANONYMOUS_WINDOW_SECONDS = env.int("DASHBOARD_AUDIT_ANONYMOUS_WINDOW_SECONDS", default=60)

# Metrics: each service's /metrics is scraped when a page asks for the summary.
METRICS_SCRAPE_TIMEOUT = env.float("METRICS_SCRAPE_TIMEOUT", default=1.0)
METRICS_WINDOW_SECONDS = env.int("METRICS_WINDOW_SECONDS", default=60)
METRICS_KEEP_SECONDS = env.int("METRICS_KEEP_SECONDS", default=120)
METRICS_MIN_INTERVAL = env.float("METRICS_MIN_INTERVAL", default=1.0)

# The trace collector (OTLP/HTTP on /v1/traces).
TRACES_MAX_BODY_BYTES = env.int("TRACES_MAX_BODY_BYTES", default=5 * 1024 * 1024)
TRACES_KEEP_SPANS = env.int("TRACES_KEEP_SPANS", default=50_000)
TRACES_KEEP_MINUTES = env.int("TRACES_KEEP_MINUTES", default=60)
TRACES_PRUNE_EVERY = env.int("TRACES_PRUNE_EVERY", default=500)
# And by size: the oldest spans go once the stored ones add up to more than this (0: no size bound).
TRACES_KEEP_BYTES = env.int("TRACES_KEEP_BYTES", default=256 * 1024 * 1024)

# Where collectstatic writes and WhiteNoise serves from. A test lab started beside
# the running one collects into its own directory: WhiteNoise remembers each
# file's size at start-up, so rewriting the files under a running dashboard
# would make it serve them cut short.
STATIC_ROOT = env.path("STATIC_ROOT", default=str(STATIC_ROOT))  # noqa: F821

# Supervisor program names the overview and the "kill the worker" preset look for.
DASHBOARD_WORKER_PROGRAM = env.str("DASHBOARD_WORKER_PROGRAM", default="worker")
DASHBOARD_LOAD_PROGRAMS = env.list("DASHBOARD_LOAD_PROGRAMS", default=["locust", "load"])
