"""The steady-state check can fail: a fault, a switch or the saga mode off its default is found and named."""

from __future__ import annotations

import pytest

from chassis import parts
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


def test_steady_state_is_red_while_the_audit_is_and_the_reset_repairs_it(engine):
    """Ensure money taken twice (the unsafe switch, payment's answers lost) fails the steady state once every
    fault and switch is back, naming the audit, and that the reset refunds it so the steady state passes."""
    lab = engine.labs()[0]
    assert engine.reset(lab).passed
    ctx = engine.ctx
    customer = ctx.new_customer()
    ctx.set_switches("order", unsafe={"charge_retry_new_key": True})
    ctx.add_fault("payment", **parts.preset_fault("payment-answers-lost"))
    try:
        response = customer.order(ctx.in_stock_sku())
    finally:
        for service in ("payment", "order"):  # put everything back but the money: not restore_defaults
            ctx.admin("DELETE", service, "/_lab/faults/")
            ctx.admin("DELETE", service, "/_lab/resilience/")
        ctx.sleep(SPREAD_SECONDS)
    assert response.status_code == 201, response.text
    order_id = response.json()["id"]
    broken = engine.check(lab, "steady-state")
    assert not broken.passed
    assert "the audit is red" in broken.message and f"order {order_id} " in broken.message, broken.message
    assert engine.reset(lab).passed
    assert engine.check(lab, "steady-state").observed["audit_ok"] is True
