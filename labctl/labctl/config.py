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
import re
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
        return cls(
            part.name,
            part.directory,
            part.port + IDENTITY.port_offset,
            IDENTITY.schema(part.schema),
            part.redis_db,
            browse_path,
            **extra,
        )


# ------------------------------------------------------------- the checkout's name

DEFAULT_LAB_NAME = "lab"
_LAB_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")


class ConfigError(Exception):
    """A lab setting (LAB_NAME, LAB_PORT_OFFSET) is malformed; the message says which and why."""


@dataclass(frozen=True)
class Identity:
    """What tells this checkout's lab apart from another one on the same machine.

    ``name`` prefixes its MySQL schemas and users (``<name>_orders``) and its
    Redis keys; ``port_offset`` moves its ports (8000 + offset ...). Both come
    from ``LAB_NAME`` / ``LAB_PORT_OFFSET`` when set, else from what
    ``labctl setup`` saved in ``var/lab.env``, else the defaults (``lab``, 0).
    """

    name: str = DEFAULT_LAB_NAME
    port_offset: int = 0

    def schema(self, default_schema: str) -> str:
        """``lab_orders`` becomes ``<name>_orders``."""
        prefix = f"{DEFAULT_LAB_NAME}_"
        assert default_schema.startswith(prefix), default_schema
        return f"{self.name}_{default_schema[len(prefix) :]}"


def identity_file(root: Path) -> Path:
    return root / "var" / "lab.env"


def read_identity(root: Path, environ=os.environ) -> Identity:
    saved: dict[str, str] = {}
    path = identity_file(root)
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                saved[key.strip()] = value.strip()
    name = (environ.get("LAB_NAME") or saved.get("LAB_NAME") or DEFAULT_LAB_NAME).strip()
    if not _LAB_NAME.match(name):
        raise ConfigError(
            f"LAB_NAME must be 1-12 lower-case letters or digits, starting with a letter (got {name!r}): "
            "it prefixes MySQL schema and user names"
        )
    raw_offset = (environ.get("LAB_PORT_OFFSET") or saved.get("LAB_PORT_OFFSET") or "0").strip()
    try:
        offset = int(raw_offset)
    except ValueError:
        offset = -1
    if not 0 <= offset <= 50000:
        raise ConfigError(f"LAB_PORT_OFFSET must be a whole number from 0 to 50000 (got {raw_offset!r})")
    return Identity(name, offset)


def save_identity(root: Path, identity: Identity) -> None:
    path = identity_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# This checkout's lab, written by `labctl setup`; LAB_NAME / LAB_PORT_OFFSET in the environment win.\n"
        f"LAB_NAME={identity.name}\nLAB_PORT_OFFSET={identity.port_offset}\n"
    )


def find_root() -> Path:
    """Return the repository root: ``$LAB_ROOT`` or two levels above this package."""
    env_root = os.environ.get("LAB_ROOT")
    if env_root:
        return Path(env_root).resolve()
    return Path(__file__).resolve().parents[2]


# A malformed LAB_NAME or LAB_PORT_OFFSET is reported by labctl's main, not as a traceback at import.
IDENTITY_ERROR = ""
try:
    IDENTITY = read_identity(find_root())
except ConfigError as _exc:
    IDENTITY, IDENTITY_ERROR = Identity(), str(_exc)

# A page of each service's browsable API worth opening first (its navbar has the login link).
BROWSE_PATHS = {
    "user": "/api/users/me/",
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
        # Four threads in one process (not four forked processes of 90 MB each): a saga step mostly waits on its
        # peers' answers. Killing the worker kills every task it runs, as before; late acks bring them back.
        "{bin}/celery -A config worker --loglevel INFO --pool threads --concurrency 4 --hostname order-worker@%h"
        " --queues saga,beat",
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
    "LAB_REDIS_PREFIX",
    "DJANGO_SETTINGS_MODULE",
    *(s.env_var for s in APPS),
)


@dataclass(frozen=True)
class Paths:
    """Run-time locations under ``<root>/var`` (never committed)."""

    root: Path

    @property
    def var(self) -> Path:
        return self.root / "var"

    @property
    def keys(self) -> Path:
        """The key dirs, one per identity (``keys/<identity>/``), and ``keys/public/``."""
        return self.var / "keys"

    @property
    def admin_keys(self) -> Path:
        """The lab admin's keys dir: the dashboard's, whose key labctl signs the admin's calls with."""
        return self.keys / "dashboard"

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
