"""A running lab with its dashboard: the four services from the integration harness, plus the dashboard.

The services send their spans to this dashboard's collector (the harness keeps
tracing on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set), so a flow run from the
dashboard comes back as one waterfall.

Run it by hand to look around (Ctrl-C or ``kill <pid>`` stops everything)::

    .venv/bin/python -m tests.browser.lab            # add --worker for the Celery worker and beat

``LAB_BROWSER_DASHBOARD_DIR`` serves another copy of ``dashboard/`` (an older
commit's, say) against the same services: how a browser test is shown to
fail on the code before its change.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import requests

try:  # under pytest, tests/ itself is on sys.path; run as a module, the repository root is
    from integration.harness import ROOT, Lab, free_port, read_env_file, start_django, start_lab
except ImportError:
    from tests.integration.harness import ROOT, Lab, free_port, read_env_file, start_django, start_lab

DASHBOARD_DIR = Path(os.environ.get("LAB_BROWSER_DASHBOARD_DIR") or ROOT / "dashboard")
DASHBOARD_REDIS_DB = 10  # the real lab uses 0-4, the harness 11-15 (15: the worker's broker)


def start_lab_with_dashboard(workdir: Path) -> Lab:
    """Start the services (tracing to the dashboard) and then the dashboard; stop() stops all."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY")}
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = url
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "300"  # spans reach the waterfall sooner
    try:
        lab = start_lab(workdir)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        start_dashboard(lab, workdir, port)
    except BaseException:
        lab.stop()
        raise
    return lab


def start_dashboard(lab: Lab, workdir: Path, port: int) -> None:
    """Migrate a fresh dashboard database and serve the dashboard with gunicorn on ``port``."""
    database = workdir / "dashboard.sqlite3"
    database.unlink(missing_ok=True)
    redis_url = ""
    services_redis = read_env_file(ROOT / "var" / "env" / "user.env").get("REDIS_URL", "")
    if services_redis:
        redis_url = urlparse(services_redis)._replace(path=f"/{DASHBOARD_REDIS_DB}").geturl()
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"},
        "LAB_ROOT": str(ROOT),
        "DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": f"sqlite:///{database}",
        "STATIC_ROOT": str(workdir / "dashboard-static"),  # not the running lab's dashboard/staticfiles
        "REDIS_URL": redis_url,
        "LAB_REDIS_PREFIX": f"browser{os.getpid()}-{int(time.time())}",
        **{f"{name.upper()}_SERVICE_URL": url for name, url in lab.urls.items()},
        # Its own address too: a load run checks every part's /health/ before it starts, this dashboard's included.
        "DASHBOARD_SERVICE_URL": f"http://127.0.0.1:{port}",
        # The overview polls every 2 s; a summary over 20 s shows a burst of traffic at once.
        "METRICS_WINDOW_SECONDS": "20",
    }
    start_django(
        lab,
        "dashboard",
        cwd=DASHBOARD_DIR,
        env=env,
        port=port,
        log=workdir / "dashboard.log",
        setup=(["migrate", "--noinput"], ["collectstatic", "--noinput"]),
        workers=2,
        threads=8,
    )
    lab.urls["dashboard"] = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if lab.processes["dashboard"].poll() is not None:
            raise RuntimeError(f"the dashboard exited early:\n{lab.log_tail('dashboard')}")
        try:
            if requests.get(f"{lab.urls['dashboard']}/health/", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the dashboard was not healthy in time:\n{lab.log_tail('dashboard')}")


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # A background job ignores Ctrl-C's SIGINT; `kill <pid>` must stop the whole lab too.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    running = start_lab_with_dashboard(ROOT / "var" / "browser-manual")
    if "--worker" in sys.argv[1:]:  # the async flow and the periodic jobs need them
        running.start_worker()
        running.start_beat()
    print("dashboard:", running.urls["dashboard"], flush=True)
    for name, url in running.urls.items():
        print(f"  {name}: {url}", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop_celery()
        running.stop()
