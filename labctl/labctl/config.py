"""Names, ports and paths of the lab, in one place.

Everything else in labctl asks this module where things are: which services
exist, on which port each listens, which MySQL schema belongs to which (all
three read from :mod:`chassis.parts`, the lab's one list of its parts), and
where the run-time files (keys, env files, databases, logs, sockets) live.
The repository root is found from this file's location unless ``LAB_ROOT``
says otherwise.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chassis import parts


@dataclass(frozen=True)
class Service:
    """One Django project of the lab as labctl runs it: a :class:`chassis.parts.Part` and what labctl adds."""

    short: str  # short name: supervisor program, env/key/log file names
    directory: str  # project dir relative to the repository root
    port: int
    schema: str  # MySQL schema, also the name of its MySQL user
    redis_db: int  # each service gets its own Redis database number
    browse_path: str  # a page of the browsable API worth opening first
    seeded: bool = True  # has a `manage.py seed_lab`
    api_docs: bool = True  # serves Swagger UI at /api/docs/

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env_var(self) -> str:
        """Name of the variable that gives peers this service's base URL."""
        return f"{self.short.upper()}_SERVICE_URL"

    @classmethod
    def of(cls, part: parts.Part, browse_path: str, **extra) -> Service:
        return cls(part.name, part.directory, part.port, part.schema, part.redis_db, browse_path, **extra)


BROWSE_PATHS = {
    "user": "/api/auth/login/",
    "order": "/api/orders/",
    "inventory": "/api/products/",
    "payment": "/api/payment-methods/",
}
SERVICES: tuple[Service, ...] = tuple(Service.of(p, BROWSE_PATHS[p.name]) for p in parts.SERVICES)

SERVICE_BY_NAME = {s.short: s for s in SERVICES}

# The dashboard serves pages, not an API, and has nothing to seed.
DASHBOARD = Service.of(parts.DASHBOARD, "/", seeded=False, api_docs=False)

# Every Django project that labctl sets up and runs.
APPS: tuple[Service, ...] = (*SERVICES, DASHBOARD)
APP_BY_NAME = {s.short: s for s in APPS}


@dataclass(frozen=True)
class Worker:
    """A background process of a project: no port, supervisord keeps it running."""

    short: str  # supervisor program name, log file name
    app: Service  # the project it runs in (its directory and env file)
    command: str  # run from the project dir; "{bin}" is the venv's bin dir, "{run}" var/run
    marker: str  # a file of the project whose presence says it has this worker

    @property
    def directory(self) -> str:
        return f"{self.app.directory} ({self.short})"


# The order service's Celery worker (the asynchronous saga) and its scheduler.
WORKERS: tuple[Worker, ...] = (
    Worker(
        "worker",
        SERVICE_BY_NAME["order"],
        "{bin}/celery -A config worker --loglevel INFO --concurrency 4 --hostname order-worker@%h --queues saga,beat",
        "config/celery.py",
    ),
    Worker(
        "beat",
        SERVICE_BY_NAME["order"],
        "{bin}/celery -A config beat --loglevel INFO --schedule {run}/celerybeat-schedule",
        "config/celery.py",
    ),
)

DEFAULT_MYSQL_ADMIN_URL = "mysql://root@127.0.0.1:3306"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"

HEALTH_TIMEOUT_SECONDS = 60

# Variables labctl writes into var/env/<short>.env. They are removed from the
# environment of the processes labctl starts, so that a value exported in the
# caller's shell cannot silently override what the env file says.
MANAGED_ENV_VARS = (
    "DJANGO_SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "LAB_KEYS_DIR",
    "DJANGO_SETTINGS_MODULE",
    *(s.env_var for s in APPS),
)


def find_root() -> Path:
    """Return the repository root: ``$LAB_ROOT`` or two levels above this package."""
    env_root = os.environ.get("LAB_ROOT")
    if env_root:
        return Path(env_root).resolve()
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Paths:
    """Run-time locations under ``<root>/var`` (never committed)."""

    root: Path

    @property
    def var(self) -> Path:
        return self.root / "var"

    @property
    def keys(self) -> Path:
        return self.var / "keys"

    @property
    def env(self) -> Path:
        return self.var / "env"

    @property
    def db(self) -> Path:
        return self.var / "db"

    @property
    def log(self) -> Path:
        return self.var / "log"

    @property
    def run(self) -> Path:
        return self.var / "run"

    @property
    def supervisord_conf(self) -> Path:
        return self.var / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        sock = self.run / "supervisor.sock"
        # A unix socket path must fit in 108 bytes; a deep checkout would not.
        if len(str(sock)) < 100:
            return sock
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"lab-supervisor-{digest}.sock"

    @property
    def supervisord_pidfile(self) -> Path:
        return self.run / "supervisord.pid"

    @property
    def venv_bin(self) -> Path:
        venv = self.root / ".venv" / "bin"
        return venv if venv.is_dir() else Path(sys.executable).parent

    @property
    def python(self) -> Path:
        return self.venv_bin / "python"

    def env_file(self, service: Service) -> Path:
        return self.env / f"{service.short}.env"

    def sqlite_file(self, service: Service) -> Path:
        return self.db / f"{service.short}.sqlite3"

    def log_file(self, service: Service | Worker) -> Path:
        return self.log / f"{service.short}.log"

    def service_dir(self, service: Service) -> Path:
        return self.root / service.directory

    def service_present(self, service: Service) -> bool:
        return (self.service_dir(service) / "manage.py").is_file()

    def worker_present(self, worker: Worker) -> bool:
        return self.service_present(worker.app) and (self.service_dir(worker.app) / worker.marker).is_file()

    def present_workers(self) -> list[Worker]:
        return [w for w in WORKERS if self.worker_present(w)]
