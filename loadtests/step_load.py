"""Step load for the scalability lab: users added in equal steps, each held for a while.

Run it, note where throughput stops growing and latency starts to climb, then
scale a service out (``labctl scale inventory=4``) and run it again. The run's
``summary.json`` has one entry per step (users, requests/s, p50/p95/p99,
failures/s) from Locust's stats history.

The step size and length come from the usual options: ``--users`` is the
last step's user count, ``--run-time`` the whole run, divided into ``STEPS``
(default 5) steps; ``STEP_USERS`` and ``STEP_SECONDS`` override them.
Who the users are is ``STEP_USER``: ``mixed`` (default), ``browse`` or ``checkout``.

Usage: labctl load --scenario step_load --users 100 --duration 5m      (5 steps of 20 users, 60 s each)
       STEPS=4 STEP_USERS=25 STEP_SECONDS=30 locust -f loadtests/step_load.py --headless

Expected failures: those of the chosen user type (none) until the lab saturates.
"""

import math
import os

from locust import LoadTestShape

_USER = os.environ.get("STEP_USER", "mixed").strip().lower()
if _USER == "browse":
    from browse import CatalogVisitor  # noqa: F401  (Locust runs the User classes it finds here)
elif _USER == "checkout":
    from checkout import Customer  # noqa: F401
elif _USER == "mixed":
    from mixed import Shopper  # noqa: F401
else:
    raise SystemExit(f"STEP_USER={_USER!r}: use mixed, browse or checkout")


def _int_env(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name}={raw!r}: use a whole number of at least 1")
    return int(raw)


class StepLoad(LoadTestShape):
    """``steps`` steps of ``step_users`` users, ``step_seconds`` each; then the run ends."""

    use_common_options = True

    def plan(self) -> tuple[int, int, float, float]:
        options = getattr(self.runner.environment, "parsed_options", None) if self.runner else None
        steps = _int_env("STEPS") or 5
        total_users = getattr(options, "num_users", None) or 50
        step_users = _int_env("STEP_USERS") or max(1, math.ceil(total_users / steps))
        run_time = getattr(options, "run_time", None)
        step_seconds = _int_env("STEP_SECONDS") or (max(1, run_time // steps) if run_time else 30)
        spawn_rate = getattr(options, "spawn_rate", None) or step_users
        return steps, step_users, float(step_seconds), float(spawn_rate)

    def tick(self):
        steps, step_users, step_seconds, spawn_rate = self.plan()
        elapsed = self.get_run_time()
        if elapsed >= steps * step_seconds:
            return None
        return (min(steps, int(elapsed // step_seconds) + 1) * step_users, spawn_rate)
