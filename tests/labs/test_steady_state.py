"""The steady-state check can fail: a fault, a switch or the saga mode off its default is found and named."""

from __future__ import annotations

import pytest

from labctl.labs.context import SPREAD_SECONDS


@pytest.mark.parametrize(
    "change, named",
    [
        ("fault", "payment has 1 active fault"),
        ("switch", "order's switches are not at their defaults: retries.enabled=False"),
        ("saga", "the saga runs async"),
    ],
)
def test_steady_state_names_what_is_off(engine, change, named):
    """Ensure the steady state fails, naming the change, and passes once the lab is reset."""
    lab = engine.labs()[0]
    assert engine.reset(lab).passed
    if change == "fault":
        engine.ctx.add_fault("payment", kind="latency", delay_ms=50)
    elif change == "switch":
        engine.ctx.set_switches("order", retries={"enabled": False})
    else:
        engine.ctx.set_saga(mode="async")
    broken = engine.check(lab, "steady-state")
    assert not broken.passed
    assert named in broken.message
    engine.ctx.sleep(SPREAD_SECONDS)
    assert engine.reset(lab).passed
