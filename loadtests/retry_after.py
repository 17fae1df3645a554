"""One write that waits out a 429: the stock top-ups before a run post once per product.

The services limit each account's writes (chassis/throttling.py, ``WRITE_RATE_PER_USER``);
a staff account restocking a hundred products in a row can reach that limit,
so each top-up waits for the ``Retry-After`` it is given, a bounded number of times.
Plain ``requests``, no locust import: loadtests/bench.py uses it too.
"""

from __future__ import annotations

import time

import requests

TRIES = 6
LONGEST_WAIT = 5.0


def post_waiting_out_limits(session: requests.Session, url: str, **kwargs) -> requests.Response:
    """POST ``url``; on 429 sleep for its Retry-After (at most 5 s) and try again, up to 6 times in all."""
    for _ in range(TRIES - 1):
        response = session.post(url, **kwargs)
        if response.status_code != 429:
            return response
        try:
            wait = float(response.headers.get("Retry-After", "1"))
        except ValueError:
            wait = 1.0
        time.sleep(min(max(wait, 0.1), LONGEST_WAIT))
    return session.post(url, **kwargs)
