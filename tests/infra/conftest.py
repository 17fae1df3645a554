"""Fixtures for the tests of the lab's own tooling (labctl, docker-compose.yml)."""

import os
import socket

import MySQLdb
import pytest

from labctl import provision
from labctl.config import DEFAULT_MYSQL_ADMIN_URL, Paths


@pytest.fixture
def lab_paths(tmp_path):
    """A throwaway lab root: var/ lives under pytest's tmp_path."""
    return Paths(tmp_path)


@pytest.fixture
def closed_port():
    """A local TCP port on which nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mysql_admin():
    """An admin connection to the local MySQL; skipped without one, except in CI."""
    url = os.environ.get("LAB_MYSQL_ADMIN_URL") or DEFAULT_MYSQL_ADMIN_URL
    target = provision.MySQLTarget.from_url(url)
    try:
        conn = provision.mysql_connect(target)
    except MySQLdb.Error as exc:
        if os.environ.get("CI") == "true" or os.environ.get("LAB_DB") == "mysql":
            pytest.fail(f"MySQL is required here but {target.address} is not reachable: {exc}")
        pytest.skip(f"no MySQL at {target.address}: {exc}")
    conn.autocommit(True)
    yield target, conn
    conn.close()
