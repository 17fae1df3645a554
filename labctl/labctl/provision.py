"""Bring the lab to "ready to start": keys, databases, env files, migrations.

Every step here is idempotent, so ``labctl setup`` can run any number of times:

* an Ed25519 key pair per service, each in its own ``var/keys/<service>/``
  with every public key (kept once made);
* the database mode: MySQL when the admin URL answers (one schema and one
  MySQL user per service, each user granted only its own schema and its test
  databases), otherwise one SQLite file per service under ``var/db``;
* the Redis mode: one Redis database number per service, or none;
* ``var/env/<short>.env`` per service, keeping its secret key and database
  password across runs;
* ``manage.py migrate``, ``collectstatic`` and ``seed_lab`` in each service.
  ``labctl up`` skips them for a service when nothing they depend on changed
  since they last ran (see :func:`service_fingerprint`); ``labctl setup`` always
  runs them.

MySQLdb and redis are imported where they are used, so that ``labctl keys``
runs where only ``cryptography`` is installed (the compose key initialiser).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import config
from .config import Paths, Service

Echo = Callable[[str], None]


class ProvisionError(Exception):
    """Setup cannot go on; the message says why and what to do."""


# --------------------------------------------------------------------------- keys


def ensure_keys(keys_dir: Path, names: Iterable[str]) -> list[str]:
    """Give each identity a keys dir of its own: ``keys_dir/<name>/``.

    ``<name>/<name>.private.pem`` (PKCS8 PEM, mode 0600, in a 0700 dir) is the
    only private key there; every identity's ``<other>.public.pem``
    (SubjectPublicKeyInfo PEM, 0644) is copied into each dir, and into
    ``keys_dir/public/`` for whoever only verifies. A service is given its own
    dir (``LAB_KEYS_DIR``), so it never has another issuer's private key to
    open. An existing private key is kept, also one of the older flat layout
    (``keys_dir/<name>.private.pem``), which is moved into its dir. Returns the
    names whose private key was created.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    names = list(names)
    keys_dir.mkdir(parents=True, exist_ok=True)
    created, publics = [], {}
    for name in names:
        own_dir = keys_dir / name
        own_dir.mkdir(exist_ok=True)
        os.chmod(own_dir, 0o700)
        private_path = own_dir / f"{name}.private.pem"
        flat_private = keys_dir / f"{name}.private.pem"
        if flat_private.exists() and not private_path.exists():
            os.replace(flat_private, private_path)
        flat_private.unlink(missing_ok=True)
        (keys_dir / f"{name}.public.pem").unlink(missing_ok=True)
        if private_path.exists():
            os.chmod(private_path, 0o600)
            key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        else:
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_private(private_path, pem)
            created.append(name)
        publics[name] = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    for holder in [*names, "public"]:
        (keys_dir / holder).mkdir(exist_ok=True)
        for name, public_pem in publics.items():
            public_path = keys_dir / holder / f"{name}.public.pem"
            if not public_path.exists() or public_path.read_bytes() != public_pem:
                public_path.write_bytes(public_pem)
                os.chmod(public_path, 0o644)
    return created


def ensure_secret_files(keys_dir: Path, names: Iterable[str]) -> list[str]:
    """A random ``django-secret-key`` (0600) in each identity's keys dir, kept once made.

    For docker-compose, whose apps read it through ``DJANGO_SECRET_KEY_FILE``:
    no secret ships in the file. Returns the names whose secret was created.
    """
    created = []
    for name in names:
        path = keys_dir / name / "django-secret-key"
        if not path.exists() or not path.read_text().strip():
            (keys_dir / name).mkdir(parents=True, exist_ok=True)
            _write_private(path, secrets.token_urlsafe(50).encode())
            created.append(name)
    return created


# The dir (a volume of its own in docker-compose) where the MySQL server finds its passwords.
DATABASE_SECRETS_DIR = "mysql"


def ensure_database_passwords(keys_dir: Path, schemas: Mapping[str, str]) -> list[str]:
    """A random password (0600) for MySQL's root and for each app's MySQL user, kept once made.

    ``schemas`` maps an identity to its MySQL user (its schema's name). For docker-compose, whose
    database server and apps read them from files, so that no password ships in the file: the
    server's ``keys_dir/mysql/`` holds ``root-password`` (``MARIADB_ROOT_PASSWORD_FILE``) and
    one file per user (``deploy/mysql-init``'s script); each identity's own dir holds its user's
    as ``database-password`` (``DATABASE_PASSWORD_FILE``). Returns the users whose password was created.
    """
    server = keys_dir / DATABASE_SECRETS_DIR
    server.mkdir(parents=True, exist_ok=True)
    os.chmod(server, 0o700)
    created = []
    for user in ["root", *schemas.values()]:
        path = server / ("root-password" if user == "root" else user)
        if not path.exists() or not path.read_text().strip():
            _write_private(path, secrets.token_urlsafe(32).encode())
            created.append(user)
    for name, user in schemas.items():
        password = (server / user).read_bytes()
        own = keys_dir / name / "database-password"
        if not own.exists() or own.read_bytes() != password:
            (keys_dir / name).mkdir(parents=True, exist_ok=True)
            _write_private(own, password)
    return created


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file that is never, even briefly, readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


# ---------------------------------------------------------------------- env files


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``KEY=value`` file; a missing file is empty."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def write_env_file(path: Path, values: Mapping[str, str], header: str) -> None:
    """Write ``values`` as a ``KEY=value`` file readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"{key}={value}" for key, value in values.items()]
    _write_private(path, ("\n".join(lines) + "\n").encode())


# ----------------------------------------------------------------------- database


@dataclass
class MySQLTarget:
    """Where a MySQL server is, parsed from a ``mysql://user:pw@host:port`` URL."""

    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> MySQLTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb"):
            raise ProvisionError(f"LAB_MYSQL_ADMIN_URL must start with mysql://, got {url!r}")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def mysql_connect(target: MySQLTarget, timeout: int = 3):
    """Open an admin connection; raises MySQLdb.OperationalError when unreachable."""
    import MySQLdb

    return MySQLdb.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        passwd=target.password,
        connect_timeout=timeout,
        charset="utf8mb4",
    )


_SCHEMA_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _like_escape(name: str) -> str:
    """Escape ``_`` so that a GRANT on ``name`` does not act as a wildcard."""
    return name.replace("_", r"\_")


def mysql_expected_grants(schema: str) -> list[str]:
    """The database-level grants of a service user: its schema and its test databases."""
    return [_like_escape(schema), _like_escape(f"test_{schema}") + "%"]


def mysql_user_exists(conn, schema: str) -> bool:
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM mysql.user WHERE User = %s", (schema,))
    (count,) = cur.fetchone()
    cur.close()
    return count > 0


def mysql_provision(conn, *, schema: str, password: str, hosts=("%", "localhost")) -> None:
    """Create ``schema`` and a user of the same name allowed on it alone.

    The user may also create and use ``test_<schema>*`` databases, which is what
    the test runner needs. Grants outside those are revoked, so a user that
    somehow gained more is brought back to exactly its own schema.
    """
    if not _SCHEMA_NAME.match(schema):
        raise ProvisionError(f"refusing an unusual schema name: {schema!r}")
    allowed = mysql_expected_grants(schema)
    # Statements are built as text (names are checked above, the password is
    # quoted by the driver): with parameters, MySQLdb reads every "%" of a host
    # or a GRANT pattern as a placeholder.
    quoted_password = conn.literal(password).decode()
    cur = conn.cursor()
    cur.execute(f"CREATE DATABASE IF NOT EXISTS `{schema}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    for host in hosts:
        account = f"'{schema}'@'{host}'"
        cur.execute(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {quoted_password}")
        cur.execute(f"ALTER USER {account} IDENTIFIED BY {quoted_password}")
        cur.execute(f"SHOW GRANTS FOR {account}")
        current = [row[0] for row in cur.fetchall()]
        if any(not _grant_is_allowed(g, allowed) for g in current):
            cur.execute(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account}")
        for db in allowed:
            cur.execute(f"GRANT ALL PRIVILEGES ON `{db}`.* TO {account}")
    cur.execute("FLUSH PRIVILEGES")
    conn.commit()
    cur.close()


def _grant_is_allowed(grant: str, allowed: list[str]) -> bool:
    if grant.startswith("GRANT USAGE ON *.*"):
        return True
    return any(f" ON `{db}`.* TO " in grant for db in allowed)


def mysql_drop(conn, *, schema: str, hosts=("%", "localhost")) -> None:
    """Remove a schema and its user (used by tests to clean up after themselves)."""
    cur = conn.cursor()
    cur.execute(f"DROP DATABASE IF EXISTS `{schema}`")
    for host in hosts:
        cur.execute(f"DROP USER IF EXISTS '{schema}'@'{host}'")
    conn.commit()
    cur.close()


@dataclass
class DatabasePlan:
    """Which database the services use, and why."""

    mode: str  # "mysql" or "sqlite"
    mysql: MySQLTarget | None = None
    reason: str = ""  # why MySQL is not used, when it is not

    def describe(self, paths: Paths) -> str:
        """One line for a person: where the data lives."""
        if self.mode == "mysql":
            assert self.mysql is not None
            schemas = ", ".join(s.schema for s in config.APPS)
            return f"MySQL at {self.mysql.address}, schemas {schemas}, one MySQL user per schema granted only its own"
        return f"SQLite files under {_rel(paths.db, paths)}/ (MySQL not used: {self.reason})"


def decide_database(env: Mapping[str, str]) -> tuple[DatabasePlan, object | None]:
    """Choose MySQL or SQLite; returns the plan and an open admin connection (or None).

    ``LAB_DB=sqlite`` forces SQLite. ``LAB_DB=mysql`` or ``CI=true`` make an
    unreachable MySQL an error instead of a fallback.
    """
    wanted = env.get("LAB_DB", "").strip().lower()
    if wanted not in ("", "mysql", "sqlite"):
        raise ProvisionError(f"LAB_DB must be 'mysql' or 'sqlite', got {wanted!r}")
    if wanted == "sqlite":
        return DatabasePlan("sqlite", reason="LAB_DB=sqlite"), None

    url = env.get("LAB_MYSQL_ADMIN_URL") or config.DEFAULT_MYSQL_ADMIN_URL
    target = MySQLTarget.from_url(url)
    required = wanted == "mysql" or env.get("CI", "").lower() == "true"
    why = "LAB_DB=mysql" if wanted == "mysql" else "CI=true"
    try:
        import MySQLdb  # noqa: F401 — only whether the driver is there
    except ImportError as exc:
        note = driver_note(config.find_root())
        reason = f"{note or f'the MySQL driver does not import ({exc})'}; for MySQL: {DRIVER_HINT}"
        if required:
            raise ProvisionError(f"{reason}\n{why} requires MySQL.") from exc
        return DatabasePlan("sqlite", reason=reason), None
    try:
        conn = mysql_connect(target)
    except Exception as exc:  # MySQLdb.OperationalError
        reason = f"MySQL at {_redact(url)} is not reachable: {exc}"
        if required:
            raise ProvisionError(
                f"{reason}\n{why} requires MySQL. Start the server, or point "
                "LAB_MYSQL_ADMIN_URL at it (mysql://user:password@host:port)."
            ) from exc
        return DatabasePlan("sqlite", reason=reason), None
    return DatabasePlan("mysql", mysql=target), conn


# Written by labctl/bootstrap.py when the driver could not be installed.
DRIVER_HINT = "sudo apt-get install libmariadb-dev pkg-config && make up"


def driver_note(root: Path) -> str:
    path = root / "var" / "mysql-driver.txt"
    return path.read_text().strip() if path.exists() else ""


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


# -------------------------------------------------------------------------- redis


def redis_url_for(base_url: str, db: int) -> str:
    """``redis://host:port`` (any path dropped) with the service's database number."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/{db}"


def redis_reachable(url: str) -> tuple[bool, str]:
    """Ping Redis; returns (ok, reason when not ok)."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - the venv always has it
        return False, f"the redis package is missing ({exc})"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except (redis.RedisError, ValueError) as exc:  # ValueError: a malformed URL
        return False, str(exc)
    return True, ""


# ----------------------------------------------------------------------- commands


def child_env(paths: Paths, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for service processes: the caller's, less what the env files say."""
    env = dict(os.environ if base is None else base)
    for name in config.MANAGED_ENV_VARS:
        env.pop(name, None)
    env["LAB_ROOT"] = str(paths.root)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_manage(paths: Paths, service: Service, *args: str, timeout: int = 600) -> str:
    """Run ``manage.py <args>`` in the service dir; return its output or raise."""
    cmd = [str(paths.python), "manage.py", *args]
    try:
        proc = subprocess.run(
            cmd,
            cwd=paths.service_dir(service),
            env=child_env(paths),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProvisionError(f"{service.directory}: `manage.py {' '.join(args)}` timed out") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise ProvisionError(
            f"{service.directory}: `manage.py {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}"
        )
    return proc.stdout


# ------------------------------------------------------ what setup did last time

# Directories whose content does not change what migrate, collectstatic and seed do.
_UNTRACKED_DIRS = {"__pycache__", "staticfiles", ".pytest_cache", ".ruff_cache", "node_modules"}


def _tree_signature(digest, directory: Path) -> None:
    """Feed every file's path, size and modification time under ``directory`` to ``digest``."""
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _UNTRACKED_DIRS)
        for name in sorted(files):
            path = Path(current) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            digest.update(f"{path.relative_to(directory)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())


def service_fingerprint(paths: Paths, service: Service) -> str:
    """A digest of what a service's migrate, collectstatic and seed depend on.

    Its code and the chassis' (paths, sizes, modification times), its env file
    (database, Redis, keys), the lab's name and the installed requirements (the
    virtualenv's stamp files): when none of them changed, running the three again
    would do nothing.
    """
    digest = hashlib.sha256()
    digest.update(f"{config.IDENTITY.name}:{config.IDENTITY.port_offset}\n".encode())
    env_file = paths.env_file(service)
    digest.update(env_file.read_bytes() if env_file.exists() else b"")
    venv = paths.root / ".venv"
    digest.update(" ".join(sorted(p.name for p in venv.glob(".installed-*"))).encode())
    for directory in (paths.service_dir(service), paths.root / "chassis"):
        digest.update(f"\n[{directory.name}]\n".encode())
        _tree_signature(digest, directory)
    return digest.hexdigest()


def applied_migrations(paths: Paths, service: Service) -> int | None:
    """How many migrations the service's database records as applied; None if it cannot be read.

    Read with the service's own credentials, so a database dropped or re-created
    since the last setup (or a password that no longer works) is noticed.
    """
    url = read_env_file(paths.env_file(service)).get("DATABASE_URL", "")
    parts = urlsplit(url)
    try:
        if parts.scheme == "mysql":
            conn = mysql_connect(MySQLTarget.from_url(url))
            conn.select_db(parts.path.lstrip("/"))
        elif parts.scheme == "sqlite":
            path = Path(url.removeprefix("sqlite:///"))
            if not path.exists():
                return None
            conn = sqlite3.connect(path)
        else:
            return None
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT COUNT(*) FROM django_migrations")
            return int(cursor.fetchone()[0])
        finally:
            conn.close()
    except Exception:  # noqa: BLE001 — no driver, no server, no table, bad file: then setup must run
        return None


def _setup_state_file(paths: Paths) -> Path:
    return paths.run / "setup-state.json"


def read_setup_state(paths: Paths) -> dict:
    try:
        state = json.loads(_setup_state_file(paths).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _unchanged(paths: Paths, service: Service, state: dict) -> dict | None:
    """The recorded run of a service's setup, when nothing it depends on changed since."""
    recorded = state.get(service.short)
    if not isinstance(recorded, dict) or recorded.get("fingerprint") != service_fingerprint(paths, service):
        return None
    if recorded.get("migrations") is None or recorded["migrations"] != applied_migrations(paths, service):
        return None
    return recorded


# -------------------------------------------------------------------------- setup


@dataclass
class SetupResult:
    """What ``setup`` decided, for the summary printed by ``up`` and ``status``."""

    database: DatabasePlan
    redis_ok: bool
    redis_reason: str
    seed_output: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # services whose last setup still held


def write_env_files(paths: Paths, plan: DatabasePlan, redis_base: str | None, conn=None) -> list[str]:
    """Write ``var/env/<short>.env`` for every app (and its MySQL user, if any).

    Returns the MySQL users that existed with a password this checkout did not
    know (or knew, but someone set another since), and whose password was
    therefore set anew: whatever else used them (another checkout of the lab
    with the same ``LAB_NAME``) no longer connects.
    """
    reset: list[str] = []
    for service in config.APPS:
        path = paths.env_file(service)
        previous = read_env_file(path)
        secret = previous.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)
        if plan.mode == "mysql":
            assert plan.mysql is not None
            known = _previous_mysql_password(previous, service)
            password = known or secrets.token_hex(16)
            # A user that exists with a password we do not know, or that no longer works (another
            # checkout of the same name set it): setting ours makes that checkout stop connecting.
            if (
                conn is not None
                and mysql_user_exists(conn, service.schema)
                and not (known and _password_works(plan.mysql, service.schema, known))
            ):
                reset.append(service.schema)
            if conn is not None:
                mysql_provision(conn, schema=service.schema, password=password)
            database_url = f"mysql://{service.schema}:{password}@{plan.mysql.host}:{plan.mysql.port}/{service.schema}"
        else:
            paths.db.mkdir(parents=True, exist_ok=True)
            database_url = f"sqlite:///{paths.sqlite_file(service)}"
        values = {
            "DJANGO_SECRET_KEY": secret,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url_for(redis_base, service.redis_db) if redis_base else "",
            "LAB_KEYS_DIR": str(paths.keys / service.short),
            "LAB_REDIS_PREFIX": config.IDENTITY.name,
        }
        values.update({peer.env_var: peer.url for peer in config.APPS})
        header = (
            f"Environment of {service.directory}, written by `labctl setup`.\n"
            "Rewritten on every run; DJANGO_SECRET_KEY and the database password are kept."
        )
        write_env_file(path, values, header)
    return reset


def _password_works(target: MySQLTarget, user: str, password: str) -> bool:
    import MySQLdb

    try:
        mysql_connect(MySQLTarget(target.host, target.port, user, password)).close()
    except MySQLdb.Error:
        return False
    return True


def _previous_mysql_password(previous: Mapping[str, str], service: Service) -> str | None:
    url = previous.get("DATABASE_URL", "")
    parts = urlsplit(url)
    if parts.scheme == "mysql" and parts.username == service.schema and parts.password:
        return unquote(parts.password)
    return None


def setup(
    paths: Paths,
    echo: Echo = print,
    env: Mapping[str, str] | None = None,
    show_seed: bool = True,
    reuse: bool = False,
) -> SetupResult:
    """Do everything up to "ready to start"; see the module docstring.

    With ``reuse``, a service whose fingerprint and applied migrations are those
    recorded when its setup last succeeded is not migrated, collected or seeded
    again: its recorded seed output is reported instead.
    """
    env = os.environ if env is None else env
    for directory in (paths.var, paths.env, paths.log, paths.run):
        directory.mkdir(parents=True, exist_ok=True)

    created = ensure_keys(paths.keys, [s.short for s in config.APPS])
    echo(f"keys      {'created for ' + ', '.join(created) if created else 'present'} in {_rel(paths.keys, paths)}")

    plan, conn = decide_database(env)
    redis_base = env.get("REDIS_URL") or config.DEFAULT_REDIS_URL
    redis_ok, redis_reason = redis_reachable(redis_base)
    try:
        reset = write_env_files(paths, plan, redis_base if redis_ok else None, conn)
    finally:
        if conn is not None:
            conn.close()
    config.save_identity(paths.root, config.IDENTITY)

    ports = sorted(app.port for app in config.APPS)
    echo(
        f"lab name  {config.IDENTITY.name}: ports {ports[0]}-{ports[-1]}, "
        f"MySQL schemas {config.IDENTITY.name}_*, Redis keys {config.IDENTITY.name}:*"
    )
    echo(f"database  {plan.describe(paths)}")
    if reset:
        echo(
            f"WARNING   the MySQL user(s) {', '.join(reset)} already existed with a password this checkout "
            "did not know (or that another checkout had changed); their passwords were set anew, "
            "so another checkout of the lab named "
            f"{config.IDENTITY.name!r} on this machine no longer connects (its `labctl setup` sets them back). "
            "Give each checkout its own name: LAB_NAME=lab2 LAB_PORT_OFFSET=100 make up"
        )
    if redis_ok:
        echo(f"redis     {_redact(redis_base)}, database 0-{len(config.APPS) - 1} (one per service)")
    else:
        echo(
            f"redis     not reachable at {_redact(redis_base)} ({redis_reason}); "
            "REDIS_URL left empty: each worker process keeps its own cache, "
            "so faults and breaker states are not shared between workers"
        )
    echo(f"env files {_rel(paths.env, paths)}/<service>.env")

    result = SetupResult(plan, redis_ok, redis_reason)
    failures: list[str] = []
    state = read_setup_state(paths)
    for service in config.APPS:
        if not paths.service_present(service):
            result.missing.append(service.directory)
            echo(f"{service.short:<9} skipped: {service.directory}/manage.py does not exist yet")
            continue
        recorded = _unchanged(paths, service, state) if reuse else None
        if recorded is not None:
            result.seed_output[service.short] = recorded.get("seed", "")
            result.reused.append(service.short)
            echo(
                f"{service.short:<9} unchanged since its last setup ({recorded['migrations']} migrations applied): "
                "migrate, collectstatic and seed skipped"
            )
            continue
        started = time.monotonic()
        state.pop(service.short, None)
        try:
            migrated = run_manage(paths, service, "migrate", "--noinput")
            run_manage(paths, service, "collectstatic", "--noinput", "--verbosity", "0")
            seeded = run_manage(paths, service, "seed_lab").strip() if service.seeded else ""
        except ProvisionError as exc:
            # Go on with the other services, so one broken service does not hide the rest.
            echo(f"{service.short:<9} FAILED (details below)")
            failures.append(str(exc))
            continue
        applied = sum(1 for line in migrated.splitlines() if line.strip().startswith("Applying "))
        result.seed_output[service.short] = seeded
        state[service.short] = {
            "fingerprint": service_fingerprint(paths, service),
            "migrations": applied_migrations(paths, service),
            "seed": seeded,
        }
        echo(
            f"{service.short:<9} migrated ({applied} new migration(s)), static files collected"
            + (", seeded" if service.seeded else "")
            + f" in {time.monotonic() - started:.1f} s"
        )
        if show_seed and seeded:
            echo(_indent(seeded))
    _setup_state_file(paths).write_text(json.dumps(state, indent=2) + "\n")
    if failures:
        raise ProvisionError("\n\n".join(failures))
    return result


def _rel(path: Path, paths: Paths) -> str:
    try:
        return str(path.relative_to(paths.root))
    except ValueError:
        return str(path)


def _indent(text: str, prefix: str = "          ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
