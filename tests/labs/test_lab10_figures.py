"""Lab 10's arithmetic on figures alone (no running lab): the knee, Little's law, the think time, and a
lab context that is not supervisord's neither scales nor counts its services' workers."""

from __future__ import annotations

import pytest

from browser.lab import ROOT
from labctl.config import Paths
from labctl.labapi import LabApi
from labctl.labs.context import LabContext
from labctl.labs.engine import load_lab
from labctl.labs.model import SolveError

LAB = load_lab(ROOT / "labs" / "10-load-and-saturation")


def module():
    """The lab's steps.py as the engine loaded it (its functions are the steps' checks)."""
    return LAB.step("step-load").check.__globals__


def step(users, rps, p95, mean=None):
    return {"users": users, "rps": rps, "p95_ms": p95, "mean_ms": mean if mean is not None else p95 / 2}


@pytest.mark.parametrize(
    "figures, knee",
    [
        # grows, then flat while p95 doubles: the knee is the last step that still grew
        ([(16, 75, 42), (32, 133, 76), (48, 131, 300), (64, 153, 360)], 1),
        # flat from the first step on: saturated already at 16 users
        ([(16, 150, 40), (32, 152, 90), (48, 149, 160)], 0),
        # throughput grows at every step: no knee
        ([(16, 57, 52), (32, 104, 73), (48, 135, 130), (64, 181, 140)], None),
        # still growing, but by less than half as much as the users while p95 doubles (seen in CI): a knee
        ([(20, 95, 28), (40, 185, 41), (60, 259, 63), (80, 300, 130)], 2),
        ([(40, 185, 78), (80, 245, 220), (120, 289, 380), (160, 328, 440)], 0),
        # flat but the latency did not climb (a noisy machine, or a cap elsewhere): not a knee either
        ([(16, 150, 40), (32, 152, 45), (48, 151, 50)], None),
    ],
)
def test_the_knee_is_where_throughput_stops_growing_while_p95_climbs(figures, knee):
    """Ensure the knee is the first step after which req/s grew by less than half as much as the users (in %)
    while p95 grew > 50 %."""
    assert module()["knee"]([step(*f) for f in figures]) == knee


def test_littles_law_counts_the_think_time_of_the_users():
    """Ensure N = X x (R + Z), with Z the mean of THINK_TIME (a range is uniform) or browse's default."""
    m = module()
    assert m["little"](step(32, 132.62, 76, mean=37.6), 0.2) == pytest.approx(31.51, abs=0.01)
    assert m["think_seconds"]({"THINK_TIME": "0.2"}) == 0.2
    assert m["think_seconds"]({"THINK_TIME": "1-3"}) == 2
    assert m["think_seconds"]({}) == 1.25  # loadtests/browse.py: between 0.5 and 2 s


def test_a_context_off_supervisord_does_not_scale_or_count_workers():
    """Ensure a lab context whose services supervisord does not run refuses to scale them and counts nothing."""
    urls = dict.fromkeys(("user", "order", "inventory", "payment"), "http://127.0.0.1:1")
    ctx = LabContext(api=LabApi(Paths(ROOT), urls=urls, timeout=1), urls=urls, staff_token=lambda: "")
    assert ctx.service_workers("inventory") is None
    with pytest.raises(SolveError, match="not the ones supervisord runs"):
        ctx.scale("inventory", 2)
    assert "nothing to scale back" in ctx.scale("inventory", None)  # the lab's reset still finishes
    told = []
    hooked = LabContext(
        api=ctx.api,
        urls=urls,
        staff_token=lambda: "",
        scale=lambda service, workers: told.append((service, workers)) or "done",
        service_workers=lambda service: 3,
    )
    assert (hooked.scale("inventory", None), hooked.service_workers("inventory")) == ("done", 3)
    assert told == [("inventory", None)]
