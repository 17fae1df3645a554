"""Tests of labctl's provisioning, supervisor and reporting logic.

Most run against a throwaway lab root under tmp_path; the MySQL ones create a
schema and user of their own on the local server and drop them afterwards.
"""

import configparser
import os
import secrets
import socket
import stat
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from labctl import cli, config, health, provision, supervisor, testreport
from labctl.config import Paths, Service


def sqlite_plan():
    return provision.DatabasePlan("sqlite", reason="test")


# ------------------------------------------------------------------------- keys


def test_keys_are_ed25519_pem_and_private_is_0600(lab_paths):
    """Ensure each service gets an Ed25519 pair, the private half readable by its owner only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    created = provision.ensure_keys(lab_paths.keys, ["user", "order"])

    assert created == ["user", "order"]
    for name in created:
        private_path = lab_paths.keys / name / f"{name}.private.pem"
        public_path = lab_paths.keys / name / f"{name}.public.pem"
        assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
        assert public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
        private = serialization.load_pem_private_key(private_path.read_bytes(), None)
        public = serialization.load_pem_public_key(public_path.read_bytes())
        assert isinstance(private, Ed25519PrivateKey)
        assert isinstance(public, Ed25519PublicKey)
        public.verify(private.sign(b"lab"), b"lab")  # raises if they are not a pair


def test_keys_are_kept_and_a_lost_public_key_is_rebuilt(lab_paths):
    """Ensure a second run keeps existing keys and restores a deleted public key."""
    provision.ensure_keys(lab_paths.keys, ["user"])
    own = lab_paths.keys / "user"
    private_before = (own / "user.private.pem").read_bytes()
    public_before = (own / "user.public.pem").read_bytes()
    (own / "user.public.pem").unlink()
    os.chmod(own / "user.private.pem", 0o644)

    assert provision.ensure_keys(lab_paths.keys, ["user"]) == []

    assert (own / "user.private.pem").read_bytes() == private_before
    assert (own / "user.public.pem").read_bytes() == public_before
    assert stat.S_IMODE((own / "user.private.pem").stat().st_mode) == 0o600


def test_each_identity_gets_a_keys_dir_with_no_other_private_key(lab_paths):
    """Ensure var/keys/<name>/ holds its own private key and every public key, and no other private key."""
    names = [s.short for s in config.APPS]
    provision.ensure_keys(lab_paths.keys, names)
    publics = {f"{n}.public.pem" for n in names}
    for name in names:
        own = lab_paths.keys / name
        assert {p.name for p in own.iterdir()} == {f"{name}.private.pem", *publics}, name
        assert stat.S_IMODE(own.stat().st_mode) == 0o700, name
        for other in names:
            assert (own / f"{other}.public.pem").read_bytes() == (
                lab_paths.keys / other / f"{other}.public.pem"
            ).read_bytes()
    assert not list(lab_paths.keys.glob("*.pem"))
    assert {p.name for p in (lab_paths.keys / "public").iterdir()} == publics


def test_keys_of_the_shared_layout_move_into_their_own_dirs(lab_paths):
    """Ensure a checkout made before (every private key in var/keys/) keeps its keys, each moved into its dir."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    lab_paths.keys.mkdir(parents=True)
    before = {}
    for name in ("user", "dashboard"):
        before[name] = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (lab_paths.keys / f"{name}.private.pem").write_bytes(before[name])
        (lab_paths.keys / f"{name}.public.pem").write_bytes(b"old")

    assert provision.ensure_keys(lab_paths.keys, ["user", "dashboard"]) == []

    assert not list(lab_paths.keys.glob("*.pem"))
    for name, pem in before.items():
        assert (lab_paths.keys / name / f"{name}.private.pem").read_bytes() == pem


# -------------------------------------------------------------------- env files


def test_env_files_keep_secret_key_across_runs(lab_paths):
    """Ensure rewriting the env files keeps each service's DJANGO_SECRET_KEY."""
    provision.write_env_files(lab_paths, sqlite_plan(), None)
    first = {s.short: provision.read_env_file(lab_paths.env_file(s)) for s in config.APPS}

    provision.write_env_files(lab_paths, sqlite_plan(), "redis://127.0.0.1:6379")
    second = {s.short: provision.read_env_file(lab_paths.env_file(s)) for s in config.APPS}

    secrets_seen = set()
    for service in config.APPS:
        assert len(first[service.short]["DJANGO_SECRET_KEY"]) >= 50
        assert second[service.short]["DJANGO_SECRET_KEY"] == first[service.short]["DJANGO_SECRET_KEY"]
        secrets_seen.add(first[service.short]["DJANGO_SECRET_KEY"])
        assert second[service.short]["REDIS_URL"] == f"redis://127.0.0.1:6379/{service.redis_db}"
    assert len(secrets_seen) == len(config.APPS), "each service has its own secret"


def test_env_file_names_every_peer_and_is_private(lab_paths):
    """Ensure each env file (dashboard's too) lists the peer URLs and the keys dir, mode 0600."""
    provision.write_env_files(lab_paths, sqlite_plan(), None)

    for service in config.APPS:
        path = lab_paths.env_file(service)
        values = provision.read_env_file(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert values["USER_SERVICE_URL"] == "http://127.0.0.1:8001"
        assert values["ORDER_SERVICE_URL"] == "http://127.0.0.1:8002"
        assert values["INVENTORY_SERVICE_URL"] == "http://127.0.0.1:8003"
        assert values["PAYMENT_SERVICE_URL"] == "http://127.0.0.1:8004"
        assert values["DASHBOARD_SERVICE_URL"] == "http://127.0.0.1:8000"
        # The service's own dir: its private key and the public keys, not the others' private keys.
        assert values["LAB_KEYS_DIR"] == str(lab_paths.keys / service.short)
        assert values["REDIS_URL"] == ""
        assert values["DATABASE_URL"] == f"sqlite:///{lab_paths.db}/{service.short}.sqlite3"


def test_child_env_drops_what_env_files_decide(lab_paths):
    """Ensure a DATABASE_URL exported in the shell cannot override the env file."""
    env = provision.child_env(
        lab_paths, {"DATABASE_URL": "sqlite:///x", "PATH": "/bin", "ORDER_SERVICE_URL": "http://elsewhere"}
    )

    assert "DATABASE_URL" not in env and "ORDER_SERVICE_URL" not in env
    assert env["PATH"] == "/bin"
    assert env["LAB_ROOT"] == str(lab_paths.root)


# ---------------------------------------------------------------- database mode


def test_sqlite_fallback_when_mysql_unreachable(closed_port):
    """Ensure an unreachable MySQL outside CI means SQLite, with the reason given."""
    env = {"LAB_MYSQL_ADMIN_URL": f"mysql://root@127.0.0.1:{closed_port}"}

    plan, conn = provision.decide_database(env)

    assert conn is None
    assert plan.mode == "sqlite"
    assert f"127.0.0.1:{closed_port}" in plan.reason


@pytest.mark.parametrize("env", [{"CI": "true"}, {"LAB_DB": "mysql"}])
def test_unreachable_mysql_is_an_error_when_required(env, closed_port):
    """Ensure CI=true or LAB_DB=mysql refuse to fall back, naming the URL."""
    url = f"mysql://root@127.0.0.1:{closed_port}"

    with pytest.raises(provision.ProvisionError) as excinfo:
        provision.decide_database({**env, "LAB_MYSQL_ADMIN_URL": url})

    assert url in str(excinfo.value)
    assert "requires MySQL" in str(excinfo.value)


def test_lab_db_sqlite_wins_even_in_ci():
    """Ensure LAB_DB=sqlite is obeyed without trying MySQL at all."""
    plan, conn = provision.decide_database({"LAB_DB": "sqlite", "CI": "true"})

    assert (plan.mode, conn) == ("sqlite", None)


def test_lab_db_rejects_unknown_values():
    """Ensure a typo in LAB_DB is reported instead of silently ignored."""
    with pytest.raises(provision.ProvisionError, match="LAB_DB"):
        provision.decide_database({"LAB_DB": "postgres"})


def test_setup_without_services_reports_sqlite_and_missing_redis(lab_paths, closed_port):
    """Ensure setup says plainly which database and Redis mode it chose."""
    lines = []
    env = {
        "LAB_MYSQL_ADMIN_URL": f"mysql://root@127.0.0.1:{closed_port}",
        "REDIS_URL": f"redis://127.0.0.1:{closed_port}",
    }

    result = provision.setup(lab_paths, echo=lines.append, env=env)

    text = "\n".join(lines)
    assert result.database.mode == "sqlite"
    assert "SQLite files under var/db/" in text
    assert f"MySQL at mysql://root@127.0.0.1:{closed_port} is not reachable" in text
    assert "REDIS_URL left empty" in text
    assert result.missing == [s.directory for s in config.APPS]
    assert provision.read_env_file(lab_paths.env_file(config.SERVICES[0]))["REDIS_URL"] == ""


def test_redis_url_gets_the_service_database_number():
    """Ensure the base URL's own path is replaced by the service's database number."""
    assert provision.redis_url_for("redis://127.0.0.1:6379", 2) == "redis://127.0.0.1:6379/2"
    assert provision.redis_url_for("redis://:pw@h:1/9", 0) == "redis://:pw@h:1/0"


# ------------------------------------------------------------------- real MySQL


@pytest.fixture
def throwaway_schemas(mysql_admin):
    """Two schema names of our own; they, their users and test databases are dropped after."""
    _, conn = mysql_admin
    names = [f"labt_{secrets.token_hex(4)}_{suffix}" for suffix in ("a", "b")]
    yield names
    cur = conn.cursor()
    for name in names:
        provision.mysql_drop(conn, schema=name)
        cur.execute(f"DROP DATABASE IF EXISTS `test_{name}`")
        cur.execute(f"DROP DATABASE IF EXISTS `test_{name}_it`")
    cur.close()


def connect_as(target, user, password, database=None):
    import MySQLdb

    kwargs = {"db": database} if database else {}
    return MySQLdb.connect(host=target.host, port=target.port, user=user, passwd=password, connect_timeout=3, **kwargs)


def test_mysql_user_sees_only_its_own_schema(mysql_admin, throwaway_schemas):
    """Ensure a provisioned user works in its schema and its test DBs, and nowhere else."""
    import MySQLdb

    target, conn = mysql_admin
    own, other = throwaway_schemas
    provision.mysql_provision(conn, schema=own, password="pw-own")
    provision.mysql_provision(conn, schema=other, password="pw-other")
    admin = conn.cursor()
    admin.execute(f"CREATE TABLE `{other}`.secret (v INT)")
    # A schema whose name differs from `own` only where the grant has "_":
    # an unescaped grant would match it as a wildcard.
    lookalike = own.replace("_", "x", 1)
    admin.execute(f"CREATE DATABASE `{lookalike}`")
    try:
        user = connect_as(target, own, "pw-own", own)
        cur = user.cursor()
        cur.execute("CREATE TABLE t (v INT)")
        cur.execute("INSERT INTO t VALUES (1)")
        cur.execute(f"CREATE DATABASE `test_{own}`")
        cur.execute(f"CREATE DATABASE `test_{own}_it`")
        cur.execute(f"DROP DATABASE `test_{own}_it`")

        for forbidden in (
            f"SELECT * FROM `{other}`.secret",
            f"USE `{other}`",
            f"USE `{lookalike}`",
            "CREATE DATABASE labt_not_mine",
        ):
            with pytest.raises(MySQLdb.OperationalError) as excinfo:
                cur.execute(forbidden)
            assert excinfo.value.args[0] in (1044, 1142), forbidden  # access denied
        user.close()
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS `{lookalike}`")


def test_mysql_provision_is_idempotent_and_takes_back_extra_grants(mysql_admin, throwaway_schemas):
    """Ensure running again converges: new password applies, a stray grant is revoked."""
    import MySQLdb

    target, conn = mysql_admin
    own, other = throwaway_schemas
    provision.mysql_provision(conn, schema=own, password="first")
    provision.mysql_provision(conn, schema=other, password="x")
    conn.cursor().execute(f"GRANT SELECT ON `{other}`.* TO '{own}'@'%'")

    provision.mysql_provision(conn, schema=own, password="second")

    with pytest.raises(MySQLdb.OperationalError):
        connect_as(target, own, "first")
    user = connect_as(target, own, "second")
    with pytest.raises(MySQLdb.OperationalError):
        user.cursor().execute(f"USE `{other}`")
    user.close()


def test_env_files_keep_mysql_password(mysql_admin, lab_paths, monkeypatch):
    """Ensure the generated MySQL password is written once and reused on the next run."""
    target, conn = mysql_admin
    suffix = secrets.token_hex(3)
    services = tuple(replace(s, schema=f"labt_{suffix}_{s.short}") for s in config.APPS)
    monkeypatch.setattr(config, "APPS", services)
    plan = provision.DatabasePlan("mysql", mysql=target)
    try:
        provision.write_env_files(lab_paths, plan, None, conn)
        first = provision.read_env_file(lab_paths.env_file(services[0]))["DATABASE_URL"]
        provision.write_env_files(lab_paths, plan, None, conn)
        second = provision.read_env_file(lab_paths.env_file(services[0]))["DATABASE_URL"]

        assert first == second
        assert first.startswith(f"mysql://{services[0].schema}:")
        assert first.endswith(f"@{target.host}:{target.port}/{services[0].schema}")
        password = first.split(":")[2].split("@")[0]
        connect_as(target, services[0].schema, password, services[0].schema).close()
    finally:
        for s in services:
            provision.mysql_drop(conn, schema=s.schema)


# ------------------------------------------------------------------- supervisor


def test_supervisor_config_runs_gunicorn_per_service(lab_paths):
    """Ensure each service is one program: gunicorn on its port, own log, group kill."""
    text = supervisor.render_config(lab_paths, list(config.SERVICES))
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)

    for service in config.SERVICES:
        program = parser[f"program:{service.short}"]
        assert f"--bind 127.0.0.1:{service.port}" in program["command"]
        assert "config.wsgi:application" in program["command"]
        assert f"--control-socket {lab_paths.run}/gunicorn-{service.short}.ctl" in program["command"]
        assert program["directory"] == str(lab_paths.root / service.directory)
        assert program["stdout_logfile"] == str(lab_paths.log / f"{service.short}.log")
        assert program["stopasgroup"] == program["killasgroup"] == "true"
        assert f'LAB_ROOT="{lab_paths.root}"' in program["environment"]
        metrics = lab_paths.run / "prometheus" / service.short
        assert f'PROMETHEUS_MULTIPROC_DIR="{metrics}"' in program["environment"]
        assert f"rm -rf {metrics} && mkdir -p {metrics} && exec " in program["command"]
        assert "--config python:chassis.gunicorn_conf" in program["command"]
    assert parser["unix_http_server"]["file"] == str(lab_paths.supervisor_socket)


def test_gunicorn_accepts_the_flags_we_pass():
    """Ensure every gunicorn option labctl uses exists in the installed gunicorn."""
    help_text = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in supervisor.GUNICORN_ARGS.split() + ["--control-socket", "--no-control-socket"]:
        if flag.startswith("--"):
            assert flag in help_text, flag


def test_long_roots_get_a_short_socket_path(tmp_path):
    """Ensure the supervisor socket path stays under the unix socket length limit."""
    deep = tmp_path / ("x" * 120)
    assert len(str(Paths(deep).supervisor_socket)) < 108


def test_a_port_held_by_a_stranger_stops_the_start(lab_paths):
    """Ensure up refuses to start when another program listens on a service port."""
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        service = Service("fake", "fake_service", port, "lab_fake", 0, "/")

        with pytest.raises(supervisor.PortInUse, match=f"port {port} \\(fake_service\\)"):
            supervisor.ensure_running(lab_paths, [service], echo=lambda _: None)
    assert not supervisor.is_running(lab_paths)


FAKE_WSGI = textwrap.dedent('''
    """A stand-in service: /health/ answers 200 as long as HEALTHY exists."""
    import os

    def application(environ, start_response):
        ok = os.path.exists(os.path.join(os.path.dirname(__file__), "HEALTHY"))
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "application/json")])
        return [b'{"service": "fake", "status": "%s", "checks": {}}' % (b"ok" if ok else b"down")]
''')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(90)
def test_supervisor_starts_checks_and_stops_services(lab_paths, monkeypatch):
    """Ensure up-to-shutdown works with real supervisord, gunicorn and a background worker."""
    service = Service("fake", "fake_service", free_port(), "lab_fake", 0, "/")
    # A worker whose command holds a "%", which supervisor's config would read as interpolation.
    worker = config.Worker(
        "fakeworker",
        service,
        "{bin}/python -c \"import time; print('worker@%h', flush=True); time.sleep(600)\"",
        "config/wsgi.py",
    )
    monkeypatch.setattr(config, "WORKERS", (worker,))
    app_dir = lab_paths.root / "fake_service" / "config"
    app_dir.mkdir(parents=True)
    (app_dir / "__init__.py").write_text("")
    (app_dir / "wsgi.py").write_text(FAKE_WSGI)
    (app_dir / "HEALTHY").write_text("")
    (app_dir.parent / "manage.py").write_text("")
    try:
        supervisor.ensure_running(lab_paths, [service], echo=lambda _: None)
        results = health.wait_healthy([service], timeout=30)
        assert results["fake"].ok, results["fake"].label()
        assert supervisor.process_info(lab_paths)["fake"]["statename"] in ("STARTING", "RUNNING")
        assert supervisor.wait_running(lab_paths, ["fakeworker"], timeout=30) == {"fakeworker": "RUNNING"}
        assert "worker@%h" in (lab_paths.log / "fakeworker.log").read_text()

        # Running it again is safe: same config, nothing restarted.
        pid = supervisor.process_info(lab_paths)["fake"]["pid"]
        supervisor.ensure_running(lab_paths, [service], echo=lambda _: None)
        assert supervisor.process_info(lab_paths)["fake"]["pid"] == pid

        (app_dir / "HEALTHY").unlink()
        down = health.check(service)
        assert (down.code, down.detail) == (503, "down")
        assert "GET /health/" in (lab_paths.log / "fake.log").read_text()
    finally:
        supervisor.shutdown(lab_paths)
    assert not supervisor.is_running(lab_paths)
    assert health.check(service).code is None


# ------------------------------------------------------------- cli and reports


def test_help_lists_every_command(capsys):
    """Ensure `labctl --help` names each subcommand."""
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for command in ("setup", "up", "down", "status", "logs", "restart", "keys"):
        assert command in out


def test_database_label_reads_the_env_file(lab_paths):
    """Ensure status shows the database the env file configures."""
    service = config.SERVICES[2]
    provision.write_env_files(lab_paths, sqlite_plan(), None)
    assert cli.database_label(lab_paths, service) == "SQLite inventory.sqlite3"


def test_report_totals_every_suite(tmp_path, capsys):
    """Ensure the summary adds up test cases and fails when any suite failed."""
    (tmp_path / "a.xml").write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="1" skipped="1"/></testsuites>'
    )
    (tmp_path / "b.xml").write_text('<testsuite tests="3" failures="0" errors="0" skipped="0"/>')

    code = testreport.main([str(tmp_path), "a=failed", "b=passed", "c=missing", "d=no-tests"])

    out = capsys.readouterr().out
    assert code == 1
    assert out.strip().splitlines()[-1] == "total: 5 passed, 3 failed, 1 skipped"
    assert "failing suites: a d" in out


def test_a_changed_env_file_changes_the_program_config(lab_paths):
    """Ensure switching a service's settings makes supervisor restart it on the next up."""
    services = list(config.SERVICES)
    provision.write_env_files(lab_paths, sqlite_plan(), None)
    assert supervisor.write_config(lab_paths, services) is True
    assert supervisor.write_config(lab_paths, services) is False

    provision.write_env_files(lab_paths, sqlite_plan(), "redis://127.0.0.1:6379")

    assert supervisor.write_config(lab_paths, services) is True


def test_log_tail_leaves_out_health_polling(tmp_path):
    """Ensure the log excerpt shown for an unhealthy service is not just our own polling."""
    log = tmp_path / "svc.log"
    log.write_text("Traceback: boom\n" + '127.0.0.1 - - "GET /health/ HTTP/1.1" 503 62\n' * 100)

    assert health.tail(log, lines=5) == "Traceback: boom"
    assert "does not exist" in health.tail(tmp_path / "missing.log")
