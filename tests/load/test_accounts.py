"""The load scenarios' prepared accounts: the users of every Locust worker hold distinct ones."""

from __future__ import annotations

import sys

from labctl import load
from labctl.config import Paths

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "loadtests"))

from prepared_accounts import account_for


def test_the_users_of_two_workers_hold_as_many_accounts_as_there_are():
    """Ensure 2 workers x 16 users take 32 distinct accounts of 32 (each worker counting its users from 0 gave
    16: two users per account, whose write limit then throttled the bench's breaker-open step)."""
    accounts = [{"email": f"bench-{i:02d}@lab.local"} for i in range(32)]
    held = [account_for(accounts, user, worker, 2)["email"] for worker in (0, 1) for user in range(16)]
    assert len(set(held)) == 32
    alone = [account_for(accounts, user, 0, 1)["email"] for user in range(8)]
    assert alone == [f"bench-{i:02d}@lab.local" for i in range(8)]


def test_a_run_tells_its_locust_processes_how_many_workers_share_the_accounts():
    """Ensure the environment of a run's Locust processes says how many workers it has (1 when none)."""
    paths = Paths(ROOT)
    assert load.run_environment(paths, load.RunSpec(scenario="checkout", workers=2))["LOAD_WORKERS"] == "2"
    assert load.run_environment(paths, load.RunSpec(scenario="checkout"))["LOAD_WORKERS"] == "1"
