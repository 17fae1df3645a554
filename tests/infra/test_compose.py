"""Tests of docker-compose.yml and deploy/mysql-init: valid, the same system as ``make up``, each app walled in.

No Docker engine is needed: ``docker-compose config -q`` validates the file,
PyYAML reads its structure, the keys job's command and the MySQL init script
are run for real (into a temporary directory, and under throwaway names
against the local MariaDB).
"""

import ast
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from labctl import config, provision

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
INIT_SQL = ROOT / "deploy" / "mysql-init" / "01-schemas.sql"
INIT_PASSWORDS = ROOT / "deploy" / "mysql-init" / "02-passwords.sh"
# Where MySQL's passwords are, in the keys job and in the MySQL container.
MYSQL_SECRETS = "mysql-secrets"
SERVICE_DOCKERFILE = "deploy/service.Dockerfile"
COLLECTOR = "http://dashboard:8000"
LOCUST_SERVICES = ("locust-master", "locust-worker")
# Long-running services without a healthcheck, each saying why in a comment.
NO_HEALTHCHECK = {"beat", "locust-worker"}


def compose_name(service: config.Service) -> str:
    return service.directory.replace("_", "-")


def signing_identities() -> set[str]:
    """The issuers the chassis accepts tokens from: each signs with a private key of its own."""
    tree = ast.parse((ROOT / "chassis" / "chassis" / "auth.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "KNOWN_ISSUERS" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("chassis/auth.py defines no KNOWN_ISSUERS")


def service_block(name: str) -> str:
    """The raw text of one service in docker-compose.yml, comments included."""
    text = COMPOSE_FILE.read_text()
    match = re.search(rf"^  {re.escape(name)}:\n(.*?)(?=^  [\w-]+:\n|^\S)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no service {name} in docker-compose.yml"
    return match.group(1)


def keys_volumes(service: dict) -> list[tuple[str, str, str]]:
    """Every keys volume a container mounts: (volume, target, mode)."""
    return [tuple(v.split(":")) for v in service.get("volumes", []) if v.startswith("keys")]


def keys_mount(service: dict) -> str:
    """Where a container mounts its one keys volume (read-only)."""
    mounts = keys_volumes(service)
    assert len(mounts) == 1, mounts
    _, target, mode = mounts[0]
    assert mode == "ro"
    return target


# Whose keys each long-running container holds: its app's; worker and beat are the order
# service's code, Locust signs the lab admin's calls as the dashboard (the operator's tool).
def key_identity(name: str) -> str:
    by_compose_name = {compose_name(app): app.short for app in config.APPS}
    by_compose_name |= {w.short: w.app.short for w in config.WORKERS}
    by_compose_name |= dict.fromkeys(LOCUST_SERVICES, config.DASHBOARD.short)
    return by_compose_name[name]


def dockerfile_uid(path: Path) -> str:
    uid = re.search(r"useradd\b[^\n]*--uid (\d+)", path.read_text())
    assert uid, f"{path} creates no user with a fixed --uid"
    return uid.group(1)


def image_uid(compose: dict, name: str) -> str:
    """The uid an app's image runs as: its own Dockerfile's, or the UID the services' Dockerfile is given."""
    build = compose["services"][name]["build"]
    if build["dockerfile"] == SERVICE_DOCKERFILE:
        assert re.search(r"useradd\b[^\n]*--uid \$\{UID\}", (ROOT / SERVICE_DOCKERFILE).read_text())
        assert re.fullmatch(r"\d+", build["args"]["UID"]), build
        return build["args"]["UID"]
    return dockerfile_uid(ROOT / build["dockerfile"])


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def init_sql():
    return INIT_SQL.read_text()


@pytest.mark.parametrize("profile", [None, "load"])
def test_docker_compose_accepts_the_file(profile):
    """Ensure `docker-compose config -q` validates the file, with and without the load profile."""
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is not installed; .ci/run should have installed it")
        pytest.skip("docker-compose is not installed")
    args = [binary, "-f", str(COMPOSE_FILE), *(["--profile", profile] if profile else []), "config", "-q"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_file_runs_what_make_up_runs(compose):
    """Ensure compose has every app, every background worker of labctl, and Locust."""
    expected = {compose_name(app) for app in config.APPS} | {w.short for w in config.WORKERS}
    expected |= {"mysql", "redis", "keys", *LOCUST_SERVICES}
    assert set(compose["services"]) == expected


def test_every_long_running_service_has_a_healthcheck(compose):
    """Ensure every service reports health, except one-shot init jobs and a few that say why not."""
    for name, service in compose["services"].items():
        if service.get("restart") == "no":  # one-shot job, e.g. key generation
            continue
        if name in NO_HEALTHCHECK:
            assert service["healthcheck"] == {"disable": True}, name
            assert re.search(r"#.*\bNo healthcheck\b", service_block(name)), f"{name}: say why it has none"
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_one_app_service_per_lab_service(compose):
    """Ensure each service is built from the one services' Dockerfile for its SERVICE, the dashboard from its own."""
    for service in config.APPS:
        app = compose["services"][compose_name(service)]
        if service is config.DASHBOARD:
            assert app["build"] == {"context": ".", "dockerfile": "dashboard/Dockerfile"}
        else:
            assert app["build"]["context"] == "."
            assert app["build"]["dockerfile"] == SERVICE_DOCKERFILE
            assert app["build"]["args"]["SERVICE"] == service.directory
        assert f"127.0.0.1:{service.port}:{service.port}" in app["ports"]
        assert f"127.0.0.1:{service.port}/health/" in " ".join(app["healthcheck"]["test"])


def test_each_app_uses_its_own_schema_and_user(compose, init_sql):
    """Ensure DATABASE_URL names the app's own schema and user, the password being the file in its keys dir."""
    users = set(re.findall(r"CREATE USER IF NOT EXISTS '(\w+)'@'%';", init_sql))
    redis_dbs = set()
    for service in config.APPS:
        app = compose["services"][compose_name(service)]
        env = app["environment"]
        url = urlsplit(env["DATABASE_URL"])
        assert url.scheme == "mysql"
        assert url.hostname == "mysql"
        assert url.path == f"/{service.schema}"
        assert url.username == service.schema in users
        assert url.password is None
        assert env["DATABASE_PASSWORD_FILE"] == f"{env['LAB_KEYS_DIR']}/database-password", service.short
        assert env["REDIS_URL"] == f"redis://redis:6379/{service.redis_db}"
        redis_dbs.add(env["REDIS_URL"])
        assert env["LAB_KEYS_DIR"] == keys_mount(app)
        assert compose_name(service) in env["ALLOWED_HOSTS"].split(",")
        for peer in config.APPS:
            assert env[peer.env_var] == f"http://{compose_name(peer)}:{peer.port}"
    assert len(redis_dbs) == len(config.APPS)


def test_apps_wait_for_keys_database_and_redis(compose):
    """Ensure apps start only after the key job succeeded and MySQL/Redis are healthy."""
    for service in config.APPS:
        app = compose["services"][compose_name(service)]
        assert app["depends_on"] == {
            "keys": {"condition": "service_completed_successfully"},
            "mysql": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
        assert keys_mount(app) == app["environment"]["LAB_KEYS_DIR"]
    assert compose["services"]["keys"]["volumes"] == [
        *(f"keys-{s.short}:/keys/{s.short}" for s in config.APPS),
        f"{MYSQL_SECRETS}:/keys/{provision.DATABASE_SECRETS_DIR}",
    ]


def test_each_container_mounts_only_its_own_keys(compose):
    """Ensure a container gets one keys volume, its identity's, so it holds no other issuer's private key."""
    job_writes = dict(v.split(":") for v in compose["services"]["keys"]["volumes"])
    assert set(compose["volumes"]) == {"mysql-data", *job_writes}
    job_writes.pop(MYSQL_SECRETS)
    holders = {}
    for name, service in compose["services"].items():
        if name in ("keys", "mysql", "redis"):
            assert name == "keys" or not keys_volumes(service), name
            continue
        identity = key_identity(name)
        (volume, target, mode), *others = keys_volumes(service)
        assert not others and mode == "ro", (name, keys_volumes(service))
        assert volume == f"keys-{identity}", f"{name} mounts {volume}, not keys-{identity}"
        # The keys job writes the volume as /keys/<identity>: the identity's dir of `labctl keys`.
        assert job_writes[volume] == f"/keys/{identity}"
        assert service["environment"]["LAB_KEYS_DIR"] == target, name
        holders.setdefault(volume, set()).add(name)
    assert holders == {
        "keys-user": {"user-service"},
        "keys-order": {"order-service", "worker", "beat"},
        "keys-inventory": {"inventory-service"},
        "keys-payment": {"payment-service"},
        "keys-dashboard": {"dashboard", *LOCUST_SERVICES},
    }


def test_init_sql_grants_each_user_its_own_schema_only(init_sql):
    """Ensure the only grants in the init script give each user its own schema."""
    grants = re.findall(r"^GRANT .*$", init_sql, flags=re.MULTILINE)
    expected = {
        f"GRANT ALL PRIVILEGES ON `{s.schema.replace('_', chr(92) + '_')}`.* TO '{s.schema}'@'%';" for s in config.APPS
    }
    assert len(grants) == len(expected)
    assert set(grants) == expected
    for service in config.APPS:
        assert f"CREATE DATABASE IF NOT EXISTS `{service.schema}`" in init_sql
    assert "CREATE DATABASE IF NOT EXISTS `lab_dashboard`" in init_sql


def run_passwords_script(client: str, target, script: Path, passwords_dir: Path) -> subprocess.CompletedProcess:
    """Source the init script as the mariadb image does: with a docker_process_sql that runs the client as root."""
    client_argv = shlex.join([client, "--protocol=tcp", "-h", target.host, "-P", str(target.port), "-u", target.user])
    return subprocess.run(
        ["bash", "-c", f"set -eo pipefail; docker_process_sql() {{ {client_argv}; }}; . {shlex.quote(str(script))}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MYSQL_PWD": target.password, "DATABASE_PASSWORDS_DIR": str(passwords_dir)},
    )


def test_init_sets_each_user_the_keys_jobs_password(compose):
    """Ensure the init script sets the password of every user the SQL creates, from the file the keys job writes."""
    script = INIT_PASSWORDS.read_text()
    users = re.search(r"^for user in ([\w ]+); do$", script, flags=re.MULTILINE)
    assert users and users.group(1).split() == [s.schema for s in config.APPS]
    assert "ALTER USER '$user'@'%' IDENTIFIED BY '$password';" in script
    # The image sources a non-executable *.sh (docker_process_sql is its function); an executable one runs apart.
    assert not os.access(INIT_PASSWORDS, os.X_OK)
    mysql = compose["services"]["mysql"]
    assert mysql["environment"]["DATABASE_PASSWORDS_DIR"] == "/run/lab-secrets"
    assert f"{MYSQL_SECRETS}:/run/lab-secrets:ro" in mysql["volumes"]


def test_init_sql_really_walls_users_in(mysql_admin, init_sql, tmp_path):
    """Ensure, on a real server, each init user reaches its schema, with the keys job's password only, and no other."""
    import MySQLdb

    target, conn = mysql_admin
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        pytest.skip("no mysql command-line client")
    prefix = f"lt{secrets.token_hex(3)}"
    sql = init_sql.replace("lab\\_", f"{prefix}\\_").replace("lab_", f"{prefix}_")
    schemas = [s.schema.replace("lab_", f"{prefix}_") for s in config.APPS]
    # The keys job's files, under the test's names.
    provision.ensure_database_passwords(tmp_path, {s.short: s.schema for s in config.APPS})
    passwords_dir = tmp_path / "renamed"
    passwords_dir.mkdir()
    script = tmp_path / "02-passwords.sh"
    script.write_text(INIT_PASSWORDS.read_text().replace("lab_", f"{prefix}_"))
    for service in config.APPS:
        (passwords_dir / service.schema.replace("lab_", f"{prefix}_")).write_bytes(
            (tmp_path / provision.DATABASE_SECRETS_DIR / service.schema).read_bytes()
        )
    try:
        # The mariadb image feeds the script to the command-line client; so do we.
        proc = subprocess.run(
            [client, "--protocol=tcp", "-h", target.host, "-P", str(target.port), "-u", target.user],
            input=sql,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MYSQL_PWD": target.password},
        )
        assert proc.returncode == 0, proc.stderr
        proc = run_passwords_script(client, target, script, passwords_dir)
        assert proc.returncode == 0, proc.stderr
        for schema in schemas:
            password = (passwords_dir / schema).read_text()
            with pytest.raises(MySQLdb.OperationalError) as excinfo:
                MySQLdb.connect(host=target.host, port=target.port, user=schema, passwd="", connect_timeout=3)
            assert excinfo.value.args[0] == 1045  # access denied: no password is no entry
            user = MySQLdb.connect(
                host=target.host, port=target.port, user=schema, passwd=password, db=schema, connect_timeout=3
            )
            cur = user.cursor()
            cur.execute("CREATE TABLE t (v INT)")
            for other in schemas:
                if other == schema:
                    continue
                with pytest.raises(MySQLdb.OperationalError) as excinfo:
                    cur.execute(f"USE `{other}`")
                assert excinfo.value.args[0] == 1044  # access denied to database
            user.close()
        # A password file that is not what the keys job writes stops the init (no SQL built from it).
        (passwords_dir / schemas[0]).write_text("x'; DROP USER root; --")
        proc = run_passwords_script(client, target, script, passwords_dir)
        assert proc.returncode != 0 and "not URL-safe base64" in proc.stderr
    finally:
        for schema in schemas:
            provision.mysql_drop(conn, schema=schema, hosts=("%",))


def test_no_service_keeps_a_dockerfile_of_its_own():
    """Ensure the services' one Dockerfile is the only one: no image of a service can drift from the others."""
    for service in config.SERVICES:
        assert not (ROOT / service.directory / "Dockerfile").exists(), service.directory
    assert "ARG SERVICE" in (ROOT / SERVICE_DOCKERFILE).read_text()


def test_each_app_migrates_seeds_then_serves_on_its_port(compose):
    """Ensure every app runs the one command: schema up to date (and seeded) before gunicorn takes requests."""
    commands = [compose["services"][compose_name(service)]["command"] for service in config.APPS]
    assert all(command == commands[0] for command in commands)
    command = commands[0]
    script = command[-1]
    assert command[:2] == ["sh", "-c"]
    # The script's "$$NAME" is the container's $NAME (compose's escape).
    assert script.index("migrate --noinput") < script.index("seed_lab") < script.index("gunicorn")
    assert 'if [ -n "$$SEED_LAB" ]; then python manage.py seed_lab; fi' in script
    assert "--bind 0.0.0.0:$$PORT" in script
    assert "--config python:chassis.gunicorn_conf" in script
    assert "rm -rf $$PROMETHEUS_MULTIPROC_DIR && mkdir -p $$PROMETHEUS_MULTIPROC_DIR && exec gunicorn" in script
    assert "config.wsgi:application" in script
    for service in config.APPS:
        env = compose["services"][compose_name(service)]["environment"]
        assert env["PORT"] == str(service.port)
        assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
        if service.seeded:
            assert env["SEED_LAB"] == "1", service.short
        else:
            assert "SEED_LAB" not in env, service.short


def test_key_owners_match_the_users_in_the_dockerfiles(compose):
    """Ensure each private key goes to the uid its app's Dockerfile runs as."""
    command = compose["services"]["keys"]["command"]
    owners = dict(arg.split("=", 1) for arg in command if "=" in arg)
    # MySQL's passwords go to the mariadb image's mysql user (test_no_password_ships_in_the_file).
    owners.pop(provision.DATABASE_SECRETS_DIR)
    assert set(owners) == {s.short for s in config.APPS} == signing_identities()
    for service in config.APPS:
        uid = image_uid(compose, compose_name(service))
        assert owners[service.short].split(":")[0] == uid, service.short
    # Locust's lab admin calls are signed with the dashboard's key.
    assert dockerfile_uid(ROOT / "loadtests" / "Dockerfile") == owners["dashboard"].split(":")[0]


def test_keys_job_creates_a_key_for_each_signing_identity(compose, tmp_path):
    """Ensure the keys job, run for real, writes per identity a dir of its own: its key, every public key, a secret."""
    entrypoint = re.search(
        r"^ENTRYPOINT (.*)$", (ROOT / "deploy" / "keys" / "Dockerfile").read_text(), flags=re.MULTILINE
    )
    argv = ast.literal_eval(entrypoint.group(1))
    assert argv[:3] == ["python", "-m", "labctl"]
    assert argv[-2:] == ["--dir", "/keys"]
    # --owner chowns (root only in the job); the keys are the same without it.
    command = [a for a in compose["services"]["keys"]["command"] if not a.startswith("--owner") and "=" not in a]
    assert command == ["--django-secrets", "--database-passwords"]
    run = [sys.executable, *argv[1:-1], str(tmp_path), *command]
    subprocess.run(run, cwd=ROOT, check=True, capture_output=True, text=True, timeout=60)
    identities = signing_identities()
    secrets_made = {}
    for identity in identities:
        # What the identity's volume holds: its own private key, every public key, its Django secret.
        own = tmp_path / identity
        assert sorted(p.name for p in own.iterdir()) == sorted(
            [
                f"{identity}.private.pem",
                "django-secret-key",
                "database-password",
                *(f"{i}.public.pem" for i in identities),
            ]
        ), identity
        for secret in (f"{identity}.private.pem", "django-secret-key", "database-password"):
            assert (own / secret).stat().st_mode & 0o077 == 0, (identity, secret)
        secrets_made[identity] = (own / "django-secret-key").read_text()
        assert len(secrets_made[identity]) >= 50, identity
    assert len(set(secrets_made.values())) == len(identities)
    # MySQL's volume: root's password and each app's user's, the one in that app's dir.
    server = tmp_path / provision.DATABASE_SECRETS_DIR
    by_user = {s.schema: (tmp_path / s.short / "database-password").read_text() for s in config.APPS}
    assert sorted(p.name for p in server.iterdir()) == sorted(["root-password", *by_user])
    assert {user: (server / user).read_text() for user in by_user} == by_user
    passwords = [*by_user.values(), (server / "root-password").read_text()]
    assert len(set(passwords)) == len(passwords) and all(len(p) >= 40 for p in passwords)
    assert server.stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in server.iterdir())
    # A later start keeps them (sessions and signed cookies survive a restart, MySQL keeps its passwords).
    subprocess.run(run, cwd=ROOT, check=True, capture_output=True, text=True, timeout=60)
    assert {i: (tmp_path / i / "django-secret-key").read_text() for i in identities} == secrets_made
    assert {s.schema: (tmp_path / s.short / "database-password").read_text() for s in config.APPS} == by_user
    assert (server / "root-password").read_text() == passwords[-1]


def test_no_secret_ships_in_the_file(compose):
    """Ensure no Django secret key is in docker-compose.yml: each app reads the random one of its keys volume."""
    text = COMPOSE_FILE.read_text()
    assert "DJANGO_SECRET_KEY:" not in text and "secret-change-me" not in text
    for service in config.APPS:
        env = compose["services"][compose_name(service)]["environment"]
        assert env["DJANGO_SECRET_KEY_FILE"] == f"{env['LAB_KEYS_DIR']}/django-secret-key", service.short
    for worker in config.WORKERS:
        env = compose["services"][worker.short]["environment"]
        assert env["DJANGO_SECRET_KEY_FILE"] == f"{env['LAB_KEYS_DIR']}/django-secret-key", worker.short


def test_no_password_ships_in_the_file(compose):
    """Ensure no password is in docker-compose.yml: MySQL and every app read the keys job's random ones from files."""
    for name, service in compose["services"].items():
        for var, value in (service.get("environment") or {}).items():
            value = str(value)
            if "PASSWORD" in var:
                assert var.endswith(("_FILE", "_DIR")) and value.startswith("/"), f"{name}: {var}={value}"
            if "://" in value:
                assert urlsplit(value).password is None, f"{name}: {var} carries a password"
    mysql = compose["services"]["mysql"]
    assert mysql["environment"]["MARIADB_ROOT_PASSWORD_FILE"] == "/run/lab-secrets/root-password"
    assert mysql["depends_on"] == {"keys": {"condition": "service_completed_successfully"}}
    # Only MySQL and the job that writes it see MySQL's passwords; the job gives them to the image's mysql user.
    holders = {
        n
        for n, s in compose["services"].items()
        if any(v.startswith(f"{MYSQL_SECRETS}:") for v in s.get("volumes", []))
    }
    assert holders == {"mysql", "keys"}
    assert f"{provision.DATABASE_SECRETS_DIR}=999" in compose["services"]["keys"]["command"]
    for service in config.APPS:
        env = compose["services"][compose_name(service)]["environment"]
        assert env["DATABASE_PASSWORD_FILE"] == f"{env['LAB_KEYS_DIR']}/database-password", service.short
    for worker in config.WORKERS:
        env = compose["services"][worker.short]["environment"]
        assert env["DATABASE_PASSWORD_FILE"] == f"{env['LAB_KEYS_DIR']}/database-password", worker.short


def test_only_loopback_publishes_a_port(compose):
    """Ensure every published port (the APIs, the dashboard, Locust's unauthenticated UI) binds to 127.0.0.1 only."""
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port!r}"
            published[name] = port
    assert "mysql" not in published and "redis" not in published
    assert published["locust-master"] == "127.0.0.1:8089:8089"


def test_worker_and_beat_run_labctls_commands_with_orders_settings(compose):
    """Ensure worker and beat are the order image, with order's env and labctl's supervisor commands."""
    order = compose["services"]["order-service"]
    # What only the web container's one command reads (how it serves) is not the worker's business.
    serving = {"PROMETHEUS_MULTIPROC_DIR", "PORT", "SEED_LAB"}
    order_env = {k: v for k, v in order["environment"].items() if k not in serving}
    assert order["build"]["args"]["SERVICE"] == "order_service"
    dockerfile = (ROOT / order["build"]["dockerfile"]).read_text()
    for worker in config.WORKERS:
        assert worker.app.short == "order"
        background = compose["services"][worker.short]
        assert background["build"] == order["build"]
        assert background["environment"] == order_env
        assert keys_mount(background) == order_env["LAB_KEYS_DIR"]
        assert background["depends_on"]["order-service"] == {"condition": "service_healthy"}
        assert background["restart"] == "unless-stopped"
        assert "ports" not in background
        # labctl runs "{bin}/celery ... {run}/..." from the project dir; the image's WORKDIR is that dir.
        command = background["command"]
        run_dir = "/app/var"
        assert command == shlex.split(worker.command.replace("{bin}/", "").replace("{run}", run_dir))
    # The beat schedule is written to a directory the image's user owns.
    beat = compose["services"]["beat"]["command"]
    schedule = beat[beat.index("--schedule") + 1]
    assert schedule.startswith("/app/var/")
    assert re.search(r"mkdir -p /app/var \\\n\s*&& chown -R lab /app/var", dockerfile)
    # The healthcheck pings this very worker: its --hostname, %h being the container's $HOSTNAME
    # ("$$" in the file is compose's escape for a "$" the shell sees).
    worker = compose["services"]["worker"]
    node = worker["command"][worker["command"].index("--hostname") + 1].replace("%h", "$$HOSTNAME")
    assert worker["healthcheck"]["test"][0] == "CMD-SHELL"
    assert f"celery -A config inspect ping --destination {node} " in worker["healthcheck"]["test"][1]


def test_everything_that_traces_exports_to_the_dashboard(compose):
    """Ensure services and the worker send their spans to the dashboard's collector, and tracing is on."""
    exporters = [compose_name(s) for s in config.SERVICES] + [w.short for w in config.WORKERS]
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        assert str(env.get("OTEL_SDK_DISABLED", "false")).lower() != "true", name
        if name in exporters or "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
            assert env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == COLLECTOR, name
    dashboard = compose["services"]["dashboard"]
    collector = urlsplit(COLLECTOR)
    assert collector.hostname in dashboard["environment"]["ALLOWED_HOSTS"].split(",")
    assert collector.port == config.DASHBOARD.port


def test_dashboard_links_browsers_to_the_published_ports(compose):
    """Ensure the dashboard's links to the APIs are the host's ports, not the container names."""
    env = compose["services"]["dashboard"]["environment"]
    links = dict(pair.split("=", 1) for pair in env["SERVICE_BROWSER_URLS"].split(","))
    assert links == {s.short: f"http://localhost:{s.port}" for s in config.SERVICES}
    assert env["LAB_ROOT"] == "/app"
    # labctl (Audit, Load pages) reads the dashboard's key from $LAB_ROOT/var/keys/dashboard.
    assert env["LAB_KEYS_DIR"] == f"{env['LAB_ROOT']}/var/keys/dashboard"
    dockerfile = (ROOT / "dashboard" / "Dockerfile").read_text()
    assert (
        "COPY labctl/ /app/labctl/" in dockerfile
        and "-r requirements.txt" in re.search(r"pip install .*", dockerfile)[0]
    )
    # The dashboard declares labctl (and the chassis it needs), relative to its WORKDIR /app/dashboard.
    requirements = (ROOT / "dashboard" / "requirements.txt").read_text().splitlines()
    assert "-e ../labctl" in requirements and "-e ../chassis" in requirements
    assert "WORKDIR /app/dashboard" in dockerfile
    assert "COPY loadtests/ /app/loadtests/" in dockerfile


def test_locust_runs_only_in_the_load_profile(compose):
    """Ensure Locust is opt-in (profile "load"), a master plus scalable workers aimed at the services."""
    for name, service in compose["services"].items():
        if name in LOCUST_SERVICES:
            assert service["profiles"] == ["load"], name
            assert service["build"] == {"context": ".", "dockerfile": "loadtests/Dockerfile"}
            env = service["environment"]
            for peer in config.SERVICES:
                assert env[peer.env_var] == f"http://{compose_name(peer)}:{peer.port}"
            # labhooks signs the lab admin's calls with the key under $LAB_ROOT/var/keys/dashboard.
            assert keys_mount(service) == f"{env['LAB_ROOT']}/var/keys/dashboard"
            assert "container_name" not in service
        else:
            assert "profiles" not in service, f"{name} would not start with a plain `docker compose up`"
    master = compose["services"]["locust-master"]
    worker = compose["services"]["locust-worker"]
    assert master["ports"] == ["127.0.0.1:8089:8089"]
    assert "--master" in master["command"]
    assert "ports" not in worker  # so that --scale locust-worker=N works
    assert worker["command"][-3:] == ["--worker", "--master-host", "locust-master"]
    locustfile = master["command"][master["command"].index("-f") + 1]
    assert worker["command"][worker["command"].index("-f") + 1] == locustfile
    assert (ROOT / "loadtests" / locustfile.replace("${LOCUST_SCENARIO:-mixed}", "mixed")).is_file()
    for condition in master["depends_on"].values():
        assert condition == {"condition": "service_healthy"}
    assert set(master["depends_on"]) == {compose_name(s) for s in config.SERVICES}


def test_locust_image_installs_what_the_locustfiles_import():
    """Ensure loadtests/Dockerfile installs the requirements and the repo packages the locustfiles import."""
    dockerfile = (ROOT / "loadtests" / "Dockerfile").read_text()
    installs = " ".join(re.findall(r"pip install ([^\n\\&]*)", dockerfile))
    assert "-r /app/loadtests/requirements.txt" in installs
    imported = set()
    for locustfile in (ROOT / "loadtests").glob("*.py"):
        for node in ast.walk(ast.parse(locustfile.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
    for package in ("labctl", "chassis"):
        if package in imported or package == "chassis" and "labctl" in imported:  # labctl.labapi imports chassis
            assert f"COPY {package}/ /app/{package}/" in dockerfile
            assert f"/app/{package}" in installs, package
