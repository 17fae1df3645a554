"""Lab 11 (chaos and consistency) done entirely through the dashboard, in a real headless Chromium.

What a student does: open lab 11, apply the preset "Payment's answers lost"
on the Faults page, start chaos_timeline on the Load page and watch the run
to its end, press Check; tick order's UNSAFE switch on the Resilience page;
run the same chaos again and find the audit red, naming the orders charged
twice; put the defence back and see one lost answer charged once; then
"Reset this lab", which refunds what was taken twice, and the audit is green.
No step is solved for them: every Check observes what the clicks did.
"""

from __future__ import annotations

import re
import shutil

from playwright.sync_api import expect

from .lab import ROOT
from .test_labs import _check, _follow_link, _nav, _observed

LAB = "11-chaos-and-consistency"
LAB_PATH = f"/labs/{LAB}/"
# The lab's own figures (steps.py's CHAOS_USERS, CHAOS_DURATION): every phase of the timeline in about a minute.
CHAOS = {"#users": "4", "#spawn": "2", "#duration": "30s", "#workers": "0"}
# 30 s of load, then at most 60 s settling the unfinished orders and waiting for the sagas, then the audit.
RUN_MS = 150_000


def _lab_page(page):
    tab = page.open(LAB_PATH)
    expect(tab.locator("main h1")).to_contain_text("Chaos and consistency")
    return tab


def _answers_lost(tab) -> None:
    """Faults page (the tab is on it) → preset "Payment's answers lost"."""
    tab.click("[data-testid=preset-payment-answers-lost]")
    expect(tab.locator(".messages")).to_contain_text("Payment's answers lost: injected on payment")


def _start_chaos(tab) -> str:
    """Load page (the tab is on it) → chaos_timeline with the lab's figures → Start; the run's id."""
    tab.select_option("#scenario", "chaos_timeline")
    for field, value in CHAOS.items():
        tab.fill(field, value)
    tab.click("[data-testid=load-start]")
    tab.wait_for_url(re.compile(r"/load/[^/]+/$"))
    return tab.url.rstrip("/").rsplit("/", 1)[1]


def _wait_for_the_run(page, run_id: str, screenshot: str) -> str:
    """Watch the run's page (it follows the run every 2 s) to its end; the run's audit banner."""
    tab = page.open(f"/load/{run_id}/")
    state = tab.locator("[data-testid=load-state]")
    expect(state).not_to_have_attribute("data-state", re.compile("^(starting|running)$"), timeout=RUN_MS)
    banner = tab.locator("p.banner", has_text="Audit after the run")
    expect(banner).to_be_visible()
    page.screenshot(screenshot)
    return banner.inner_text()


def _order_switch(tab, unsafe: bool) -> None:
    """Resilience page (the tab is on it) → order's panel → the UNSAFE box → Apply to order."""
    form = tab.locator("[data-testid=switches-order]")
    box = form.locator("input[name='unsafe.charge_retry_new_key']")
    box.check() if unsafe else box.uncheck()
    form.get_by_role("button", name="Apply to order").click()
    expect(tab.locator(".messages")).to_contain_text("Updated order's resilience switches")
    expect(tab.locator("[data-testid=unsafe-on-order]")).to_have_count(1 if unsafe else 0)


def _audit(page):
    """The Audit page, audited afresh: it may first show the shared audit of a few seconds ago (its age says so)."""
    tab = page.open("/audit/")
    result = tab.locator("[data-testid=audit-result]")
    expect(result).to_be_visible(timeout=30_000)
    with tab.expect_response(lambda r: "/partials/audit/" in r.url and "fresh=1" in r.url, timeout=30_000) as answer:
        tab.get_by_role("button", name="Run the audit again").click()
    assert answer.value.status == 200, answer.value.status
    expect(tab.locator("[data-testid=audit-age]")).to_have_attribute("data-age", "0")
    return tab, result


def _reset(tab) -> None:
    tab.click("[data-testid=lab-reset]")
    expect(tab.locator(".messages")).to_contain_text("Steady state:", timeout=60_000)


def test_lab_11_through_the_dashboard(staff, admin_api, lab):
    """Ensure a student can do lab 11 from the dashboard alone: the unsafe run's audit names orders; reset greens it."""
    # The student's lab runs the Celery worker and beat: beat's recovery job finishes the sagas a payment
    # outage left not knowing whether a lost charge was captured (without it they pass the saga's deadline).
    lab.start_worker()
    lab.start_beat()
    runs: list[str] = []
    tab = staff.open("/labs/")
    tab.locator(f"[data-testid=lab-{LAB}]").get_by_role("link", name="Chaos and consistency").click()
    tab.wait_for_url(re.compile(re.escape(LAB_PATH) + "$"))
    expect(tab.locator("[data-testid=lab-text]")).to_contain_text("Hypothesis")
    try:
        _do_lab(staff, admin_api, runs)
    except BaseException:
        _reset(_lab_page(staff))  # the next test finds the lab at its defaults, the double charges refunded
        raise
    finally:  # the browser lab writes into this checkout's var/loadtests/, which the real lab's Load page lists
        lab.stop_celery()
        for run_id in runs:
            shutil.rmtree(ROOT / "var" / "loadtests" / run_id, ignore_errors=True)
    assert staff.errors == [], staff.errors


def _do_lab(staff, admin_api, runs: list[str]) -> None:
    # Steady state: reset first (an earlier test may have left something), then the check is green.
    tab = _lab_page(staff)
    _reset(tab)
    expect(tab.locator(".messages")).to_contain_text("Steady state: PASS")
    assert _check(tab, "steady-state")

    # 1. "Payment's answers lost" on Faults, chaos_timeline on Load; Check while it runs says to wait.
    assert not _check(tab, "chaos")
    expect(tab.locator("[data-testid=message-chaos]")).to_contain_text("No chaos run of yours has finished")
    _follow_link(tab, "chaos", "/faults/")  # the step's first action is on Faults, the run on Load
    _answers_lost(tab)
    assert [f["id"] for f in admin_api.faults("payment")] == ["preset-payment-answers-lost"]
    _nav(tab, "Load")
    runs.append(_start_chaos(tab))
    tab = _lab_page(staff)
    assert not _check(tab, "chaos")
    expect(tab.locator("[data-testid=message-chaos]")).to_contain_text(f"Chaos run {runs[-1]} is still")
    assert "every invariant holds" in _wait_for_the_run(staff, runs[-1], "lab11-chaos-run")
    tab = _lab_page(staff)
    assert _check(tab, "chaos"), tab.locator("[data-testid=message-chaos]").inner_text()
    assert int(_observed(tab, "chaos", "lost_answers")) > 0
    _, result = _audit(staff)
    assert result.get_attribute("data-ok") == "true", result.inner_text()

    # 2. The unsafe switch, on the Resilience page: red while it is on.
    tab = _lab_page(staff)
    assert not _check(tab, "unsafe-on")
    _follow_link(tab, "unsafe-on", "/resilience/")
    _order_switch(tab, True)
    expect(tab.locator("[data-testid=unsafe-order]")).to_have_class(re.compile(r"\bis-on\b"))
    tab = _lab_page(staff)
    assert _check(tab, "unsafe-on")

    # 3. The same chaos without the defence: the run's audit and the Audit page are red, naming the orders.
    assert not _check(tab, "unsafe-chaos")
    expect(tab.locator("[data-testid=message-unsafe-chaos]")).to_contain_text("since you turned the unsafe switch on")
    _follow_link(tab, "unsafe-chaos", "/faults/")
    _answers_lost(tab)
    _nav(tab, "Load")
    runs.append(_start_chaos(tab))
    assert "invariants broken" in _wait_for_the_run(staff, runs[-1], "lab11-unsafe-run")
    tab = _lab_page(staff)
    assert _check(tab, "unsafe-chaos"), tab.locator("[data-testid=message-unsafe-chaos]").inner_text()
    expect(tab.locator("[data-testid=message-unsafe-chaos]")).to_contain_text("The audit is red")
    named = [int(o) for o in _observed(tab, "unsafe-chaos", "charged_twice").split(", ")]
    assert int(_observed(tab, "unsafe-chaos", "extra_cents")) > 0
    audit, result = _audit(staff)
    assert result.get_attribute("data-ok") == "false", result.inner_text()
    expect(audit.locator("#audit .check.failed").first).to_be_visible()  # charged twice: confirmed, or cancelled
    for order in named:  # each order the check names is on the page, with a link to its traces
        listed = audit.locator("#audit .check.failed li", has_text=re.compile(rf"\border {order}\b"))
        expect(listed.first).to_be_visible()
    staff.screenshot("lab11-audit-red")

    # 4. The defence back: one checkout whose answer is lost, charged once.
    tab = _lab_page(staff)
    assert not _check(tab, "safe-again")
    expect(tab.locator("[data-testid=message-safe-again]")).to_contain_text("still on")
    _follow_link(tab, "safe-again", "/resilience/")
    _order_switch(tab, False)
    tab = _lab_page(staff)
    assert not _check(tab, "safe-again")
    _nav(tab, "Faults")
    _answers_lost(tab)
    _nav(tab, "Flows")
    tab.click("[data-testid=flow-checkout-sync]")
    tab.wait_for_url(re.compile(r"/flows/runs/[0-9a-f-]+/$"), timeout=45_000)
    expect(tab.locator("[data-testid=history]")).to_contain_text("after its answer was lost")
    _nav(tab, "Faults")
    tab.locator("[data-testid=faults-payment]").get_by_role("button", name="clear").click()
    expect(tab.locator("[data-testid=faults-payment]")).to_have_attribute("data-count", "0")
    assert admin_api.faults("payment") == []
    tab = _lab_page(staff)
    assert _check(tab, "safe-again"), tab.locator("[data-testid=message-safe-again]").inner_text()
    assert _observed(tab, "safe-again", "captured_charges") == "1"

    # Reset this lab: the extra charges of the named orders refunded, the Audit page green again.
    _reset(tab)
    expect(tab.locator(".messages")).to_contain_text("Steady state: PASS")
    expect(tab.locator(".messages")).to_contain_text("refunded any charge an unsafe switch took twice")
    audit, result = _audit(staff)
    assert result.get_attribute("data-ok") == "true", audit.locator("#audit").inner_text()
    staff.screenshot("lab11-audit-green")
