"""Which prepared account a load user takes (``ACCOUNTS_FILE``): plain Python, no Locust, so it can be tested."""

from __future__ import annotations


def account_for(accounts: list[dict], user: int, worker_index: int, workers: int) -> dict:
    """The account of a worker's ``user``-th user: the workers take turns through ``accounts``, so
    ``workers`` x N users hold as many distinct accounts as there are. (Each worker counting its own users
    from 0 handed the same few to every worker, and one account's write limit then throttled them.)"""
    return accounts[(user * max(1, workers) + worker_index) % len(accounts)]
