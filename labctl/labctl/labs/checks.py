"""Checks more than one lab needs, built on :class:`~labctl.labs.context.LabContext`."""

from __future__ import annotations

from chassis import parts

from .context import SERVICES, LabContext
from .model import Outcome, Step, failed, passed

DEFAULT_SAGA_MODE = parts.DEFAULT_SAGA_MODE


def steady_state(ctx: LabContext) -> Outcome:
    """Every service healthy, no fault anywhere, every switch at its default, every breaker closed, saga sync,
    and the audit green: an earlier experiment left no money, stock or order out of place."""
    problems, observed = [], {}
    for service in SERVICES:
        status, body = ctx.health(service)
        observed[f"{service}_health"] = status
        if status != 200:
            failing = [
                name
                for name, check in (body.get("checks") or {}).items()
                if isinstance(check, dict) and not check.get("ok", True)
            ]
            problems.append(
                f"{service} is not healthy ({status or 'no answer'}"
                + (f": {', '.join(failing)}" if failing else "")
                + ")"
            )
            continue
        faults = ctx.faults(service)
        if faults:
            problems.append(
                f"{service} has {len(faults)} active fault(s): "
                + ", ".join(f"{f.get('kind')} ({f.get('id')})" for f in faults)
            )
        res = ctx.resilience(service)
        defaults = res.get("defaults") or {}
        changed = [
            f"{section}.{name}={value}"
            for section, values in res["switches"].items()
            for name, value in values.items()
            if defaults.get(section, {}).get(name, value) != value
        ]
        if changed:
            problems.append(f"{service}'s switches are not at their defaults: {', '.join(changed)}")
        opened = [
            f"{service} → {peer} is {b['state']}"
            for peer, b in res.get("breakers", {}).items()
            if b["state"] != "closed"
        ]
        problems.extend(f"the breaker {o}" for o in opened)
    if not problems:
        saga = ctx.saga()
        observed["saga_mode"] = saga["mode"]
        if saga["mode"] != DEFAULT_SAGA_MODE:
            problems.append(f"the saga runs {saga['mode']}, not {DEFAULT_SAGA_MODE}")
    if not problems:
        problems.extend(_audit_problems(ctx, observed))
    if problems:
        return failed(
            "Not at the steady state: " + "; ".join(problems) + ". Press “Reset this lab” (or: labctl lab reset N).",
            **observed,
        )
    return passed(
        "Every service is healthy, no fault is active, every switch is at its default, "
        "every breaker is closed, the saga runs sync and the audit is green.",
        **observed,
    )


def _audit_problems(ctx: LabContext, observed: dict) -> list[str]:
    """What the audit finds broken (an earlier experiment's leftovers), at most three violations named."""
    audit = ctx.audit()
    observed["audit_ok"] = audit["ok"]
    if audit["ok"]:
        return []
    violations = [v["message"] for item in audit["checks"] for v in item["violations"]]
    shown = "; ".join(violations[:3]) + (f"; and {len(violations) - 3} more" if len(violations) > 3 else "")
    return [
        f"the audit is red ({shown}): the reset refunds what was charged twice, an order still in its saga "
        "ends within its deadline, and the Audit page names the rest"
    ]


STEADY = Step(
    key="steady-state",
    title="Steady state: the lab is healthy and at its defaults",
    check=steady_state,
    solve=lambda ctx: ctx.restore_defaults(),
    hints=("“Reset this lab” clears every fault, puts every switch and the saga mode back and closes the breakers.",),
    link="/",
    link_label="Overview",
    terminal="labctl status && labctl fault list",
)
