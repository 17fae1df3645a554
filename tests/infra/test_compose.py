"""Tests of docker-compose.yml and deploy/mysql-init: valid, and each service walled in.

No Docker engine is needed: ``docker-compose config -q`` validates the file,
PyYAML reads its structure, and the MySQL init script is run for real, under
throwaway names, against the local MariaDB.
"""

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from labctl import config, provision

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
INIT_SQL = ROOT / "deploy" / "mysql-init" / "01-schemas.sql"


def compose_name(service: config.Service) -> str:
    return service.directory.replace("_", "-")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def init_sql():
    return INIT_SQL.read_text()


def test_docker_compose_accepts_the_file():
    """Ensure `docker-compose config -q` validates the file (CI installs docker-compose)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is not installed; .ci/run should have installed it")
        pytest.skip("docker-compose is not installed")
    proc = subprocess.run([binary, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_long_running_service_has_a_healthcheck(compose):
    """Ensure every service reports health, except one-shot init jobs."""
    for name, service in compose["services"].items():
        if service.get("restart") == "no":  # one-shot job, e.g. key generation
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_one_app_service_per_lab_service(compose):
    """Ensure each lab service is built from its own Dockerfile with the repo as context."""
    for service in config.SERVICES:
        app = compose["services"][compose_name(service)]
        assert app["build"] == {"context": ".", "dockerfile": f"{service.directory}/Dockerfile"}
        assert f"127.0.0.1:{service.port}:{service.port}" in app["ports"]
        assert f"127.0.0.1:{service.port}/health/" in " ".join(app["healthcheck"]["test"])


def test_each_app_uses_its_own_schema_and_user(compose, init_sql):
    """Ensure DATABASE_URL names the service's own schema, user and that user's password."""
    passwords = dict(re.findall(r"CREATE USER IF NOT EXISTS '(\w+)'@'%' IDENTIFIED BY '([^']*)'",
                                init_sql))
    redis_dbs = set()
    for service in config.SERVICES:
        env = compose["services"][compose_name(service)]["environment"]
        url = urlsplit(env["DATABASE_URL"])
        assert url.scheme == "mysql"
        assert url.hostname == "mysql"
        assert url.path == f"/{service.schema}"
        assert url.username == service.schema
        assert url.password == passwords[service.schema]
        redis_dbs.add(env["REDIS_URL"])
        assert env["LAB_KEYS_DIR"] == "/keys"
        assert compose_name(service) in env["ALLOWED_HOSTS"].split(",")
        for peer in config.SERVICES:
            assert env[peer.env_var] == f"http://{compose_name(peer)}:{peer.port}"
    assert len(redis_dbs) == len(config.SERVICES)


def test_apps_wait_for_keys_database_and_redis(compose):
    """Ensure apps start only after the key job succeeded and MySQL/Redis are healthy."""
    for service in config.SERVICES:
        app = compose["services"][compose_name(service)]
        assert app["depends_on"] == {
            "keys": {"condition": "service_completed_successfully"},
            "mysql": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
        assert "keys:/keys:ro" in app["volumes"]
    assert "keys:/keys" in compose["services"]["keys"]["volumes"]


def test_init_sql_grants_each_user_its_own_schema_only(init_sql):
    """Ensure the only grants in the init script give each user its own schema."""
    grants = re.findall(r"^GRANT .*$", init_sql, flags=re.MULTILINE)
    expected = {
        f"GRANT ALL PRIVILEGES ON `{s.schema.replace('_', chr(92) + '_')}`.* TO '{s.schema}'@'%';"
        for s in config.SERVICES
    }
    assert set(grants) == expected
    for service in config.SERVICES:
        assert f"CREATE DATABASE IF NOT EXISTS `{service.schema}`" in init_sql


def test_init_sql_really_walls_users_in(mysql_admin, init_sql):
    """Ensure, on a real server, each init-script user reaches its schema and no other."""
    import MySQLdb

    target, conn = mysql_admin
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        pytest.skip("no mysql command-line client")
    prefix = f"lt{secrets.token_hex(3)}"
    sql = init_sql.replace("lab\\_", f"{prefix}\\_").replace("lab_", f"{prefix}_")
    schemas = [s.schema.replace("lab_", f"{prefix}_") for s in config.SERVICES]
    try:
        # The mariadb image feeds the script to the command-line client; so do we.
        proc = subprocess.run(
            [client, "--protocol=tcp", "-h", target.host, "-P", str(target.port), "-u", target.user],
            input=sql, capture_output=True, text=True, timeout=60,
            env={**os.environ, "MYSQL_PWD": target.password},
        )
        assert proc.returncode == 0, proc.stderr
        for schema in schemas:
            password = f"{schema}_pw"
            user = MySQLdb.connect(host=target.host, port=target.port, user=schema,
                                   passwd=password, db=schema, connect_timeout=3)
            cur = user.cursor()
            cur.execute("CREATE TABLE t (v INT)")
            for other in schemas:
                if other == schema:
                    continue
                with pytest.raises(MySQLdb.OperationalError) as excinfo:
                    cur.execute(f"USE `{other}`")
                assert excinfo.value.args[0] == 1044  # access denied to database
            user.close()
    finally:
        for schema in schemas:
            provision.mysql_drop(conn, schema=schema, hosts=("%",))


def test_each_app_migrates_seeds_then_serves_on_its_port(compose):
    """Ensure a container brings its schema up to date before gunicorn takes requests."""
    for service in config.SERVICES:
        command = compose["services"][compose_name(service)]["command"]
        script = command[-1]
        assert command[:2] == ["sh", "-c"]
        assert script.index("migrate --noinput") < script.index("seed_lab") < script.index("gunicorn")
        assert f"--bind 0.0.0.0:{service.port}" in script
        assert "--config python:chassis.gunicorn_conf" in script
        metrics = compose["services"][compose_name(service)]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        assert f"rm -rf {metrics} && mkdir -p {metrics} && exec gunicorn" in script
        assert "config.wsgi:application" in script


def test_key_owners_match_the_users_in_the_dockerfiles(compose):
    """Ensure each private key goes to the uid its service's Dockerfile runs as."""
    command = compose["services"]["keys"]["command"]
    owners = dict(arg.split("=", 1) for arg in command if "=" in arg)
    assert set(owners) == {s.short for s in config.SERVICES}
    for service in config.SERVICES:
        dockerfile = ROOT / service.directory / "Dockerfile"
        if not dockerfile.exists():
            continue  # the service's Dockerfile is not written yet
        uid = re.search(r"useradd\b[^\n]*--uid (\d+)", dockerfile.read_text())
        assert uid, f"{dockerfile} creates no user with a fixed --uid"
        assert owners[service.short].split(":")[0] == uid.group(1), service.short
