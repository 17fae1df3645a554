"""Lab 5 (the circuit breaker) done entirely through the dashboard, in a real headless Chromium.

What a student does: open the Labs page, open lab 5, read it, follow each
step's link to the page where the step is done (Faults, Flows, Resilience),
come back and press Check until the step is green, answer the questions from
their own figures, and download the report, which must hold those figures.
No step is solved for them: every Check observes what the clicks did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.sync_api import expect

LAB = "05-circuit-breaker"
LAB_PATH = f"/labs/{LAB}/"


def _lab_page(page):
    tab = page.open(LAB_PATH)
    expect(tab.locator("main h1")).to_contain_text("The circuit breaker")
    return tab


def _check(tab, key: str) -> bool:
    """Press the step's Check (htmx swaps the widget); True when it came back PASS."""
    widget = tab.locator(f"[data-testid=step-{key}]")
    widget.evaluate("el => { el.dataset.before = 'check'; }")  # the widget htmx is about to replace
    with tab.expect_response(lambda r: r.url.endswith(f"/steps/{key}/check/")) as answer:
        widget.locator(f"[data-testid=check-{key}]").click()
    assert answer.value.status == 200, answer.value.status
    # Read the widget the answer put in place, not the one it replaces (already FAIL from an earlier check).
    swapped = tab.locator(f"[data-testid=step-{key}]:not([data-before])")
    expect(swapped).to_have_count(1)
    expect(swapped).not_to_have_attribute("data-state", "new")
    return swapped.get_attribute("data-state") == "pass"


def _follow_link(tab, key: str, path: str) -> None:
    """Open the page the step links to, as a student would, from the step's own button."""
    tab.locator(f"[data-testid=link-{key}]").click()
    tab.wait_for_url(re.compile(re.escape(path) + r"(#.*)?$"))


def _nav(tab, name: str) -> None:
    tab.locator("nav.nav").get_by_role("link", name=name, exact=True).click()
    tab.wait_for_url(re.compile(f"/{name.lower()}/$"))


def _checkout(tab) -> None:
    """Flows page → Run: Checkout (sync), and wait for the run's page."""
    tab.click("[data-testid=flow-checkout-sync]")
    tab.wait_for_url(re.compile(r"/flows/runs/[0-9a-f-]+/$"), timeout=45_000)
    expect(tab.locator("[data-testid=flow-verdict]")).to_be_visible()


def _checkouts_until_green(page, key: str, *, most: int, pause_ms: int = 0) -> None:
    """Go to Flows (the step's link when it points there), run one checkout, come back and Check; until green."""
    for _ in range(most):
        tab = _lab_page(page)
        if tab.locator(f"[data-testid=link-{key}]").get_attribute("href").startswith("/flows/"):
            _follow_link(tab, key, "/flows/")
        else:  # the step links to where its switch is; the checkout itself is on Flows
            _nav(tab, "Flows")
        _checkout(tab)
        tab = _lab_page(page)
        if _check(tab, key):
            return
        if pause_ms:
            tab.wait_for_timeout(pause_ms)
    message = _lab_page(page).locator(f"[data-testid=message-{key}]").inner_text()
    raise AssertionError(f"step {key} still fails after {most} checkouts: {message}")


def _breaker_switch(tab, enabled: bool) -> None:
    form = tab.locator("[data-testid=switches-order]")
    box = form.locator("input[name='breaker.enabled']")
    box.check() if enabled else box.uncheck()
    form.get_by_role("button", name="Apply to order").click()
    expect(tab.locator(".messages")).to_contain_text("Updated order's resilience switches")


def _observed(tab, key: str, name: str) -> str:
    cell = tab.locator("td", has_text=re.compile(f"^{name}$"))
    row = tab.locator(f"[data-testid=observed-{key}] tr").filter(has=cell)
    return row.locator("td").nth(1).inner_text().strip()


def _answer_choice(tab, key: str, choice: str) -> None:
    question = tab.locator(f"[data-testid=question-{key}]")
    question.get_by_label(choice, exact=True).check()
    question.locator(f"[data-testid=answer-{key}]").click()
    expect(tab.locator(f"[data-testid=answer-verdict-{key}]")).to_have_text("right")


def _download(tab, testid: str) -> str:
    with tab.expect_download() as info:
        tab.click(f"[data-testid={testid}]")
    return Path(info.value.path()).read_text()


def test_lab_5_through_the_dashboard(staff, admin_api):
    """Ensure a student can do lab 5 from the dashboard alone, and their report holds their own figures."""
    tab = staff.open("/labs/")
    entry = tab.locator(f"[data-testid=lab-{LAB}]")
    expect(entry).to_contain_text("The circuit breaker")
    expect(entry).to_contain_text("15 min")
    expect(entry).to_contain_text("0/6 steps, 0/3 answers")
    staff.screenshot("labs")
    entry.get_by_role("link", name="The circuit breaker").click()
    tab.wait_for_url(re.compile(re.escape(LAB_PATH) + "$"))
    expect(tab.locator("[data-testid=lab-text]")).to_contain_text("Hypothesis")
    expect(tab.locator("[data-testid=questions] section")).to_have_count(3)
    try:
        _do_lab(staff, admin_api)
    finally:
        tab = _lab_page(staff)  # whatever happened, the next test finds the lab at its defaults
        tab.click("[data-testid=lab-reset]")
        expect(tab.locator(".messages")).to_contain_text("Reset: cleared every fault", timeout=30_000)
    expect(tab.locator(".messages")).to_contain_text("Steady state: PASS")
    assert staff.errors == [], staff.errors


def _do_lab(staff, admin_api) -> None:
    # Steady state: reset first (an earlier test may have left something), then the check is green.
    tab = _lab_page(staff)
    tab.click("[data-testid=lab-reset]")
    expect(tab.locator(".messages")).to_contain_text("Steady state: PASS", timeout=30_000)
    assert _check(tab, "steady-state")

    # 1. One checkout while payment is up (the flow saves its card), then the Payment outage preset.
    _nav(tab, "Flows")
    _checkout(tab)
    tab = _lab_page(staff)
    assert not _check(tab, "outage")  # nothing broken yet: the check can fail
    expect(tab.locator("[data-testid=message-outage]")).to_contain_text("no outage fault yet")
    _follow_link(tab, "outage", "/faults/")
    tab.click("[data-testid=preset-payment-outage]")
    expect(tab.locator(".messages")).to_contain_text("Payment outage: injected on payment")
    assert [f["id"] for f in admin_api.faults("payment")] == ["preset-payment-outage"]
    tab = _lab_page(staff)
    assert _check(tab, "outage")

    # 2. Checkouts while payment is down until the breaker opens; 3. one more, turned away at once.
    _checkouts_until_green(staff, "breaker-opens", most=8)
    _checkouts_until_green(staff, "fail-fast", most=3)

    # 4. The breaker off (Resilience page), one more checkout: it waits for the dead payment again.
    tab = _lab_page(staff)
    assert not _check(tab, "breaker-off")
    _follow_link(tab, "breaker-off", "/resilience/")
    _breaker_switch(tab, False)
    _checkouts_until_green(staff, "breaker-off", most=3)

    # 5. Breaker back on, every fault cleared, then checkouts until the breaker has closed again.
    tab = _lab_page(staff)
    _nav(tab, "Resilience")  # the step links to Faults; its text says to tick the breaker first
    _breaker_switch(tab, True)
    tab = _lab_page(staff)
    _follow_link(tab, "recover", "/faults/")
    tab.click("[data-testid=clear-all]")
    expect(tab.locator(".messages")).to_contain_text("Cleared")
    assert admin_api.faults("payment") == []
    _checkouts_until_green(staff, "recover", most=8, pause_ms=3000)

    # The questions, from the figures the checks recorded on the page.
    tab = _lab_page(staff)
    fast = int(_observed(tab, "fail-fast", "fail_fast_ms"))
    off = int(_observed(tab, "breaker-off", "breaker_off_ms"))
    assert off > fast, (off, fast)
    speedup = round(off / max(fast, 1), 1)
    tab.fill("#answer-speedup", str(speedup))
    tab.click("[data-testid=answer-speedup]")
    expect(tab.locator("[data-testid=answer-verdict-speedup]")).to_have_text("right")
    expect(tab.locator("[data-testid=explanation-speedup]")).to_be_visible()
    _answer_choice(tab, "half-open", "half-open")
    _answer_choice(tab, "what-it-saves", "the wait of every checkout and order's threads")

    tab = _lab_page(staff)
    expect(tab.locator("[data-testid=lab-progress]")).to_have_text("finished")
    for key in ("steady-state", "outage", "breaker-opens", "fail-fast", "breaker-off", "recover"):
        expect(tab.locator(f"[data-testid=step-{key}]")).to_have_attribute("data-state", "pass")
    staff.screenshot("lab-finished")
    tab.evaluate("document.getElementById('step-outage').scrollIntoView({block: 'start'}); window.scrollBy(0, -330)")
    staff.screenshot("lab-page", docs=True)

    # The report: the student's own figures, every step done (none shown), every answer right.
    report = _download(tab, "report-md")
    assert "# Lab report: 5. The circuit breaker" in report
    assert "Student: admin@lab.local" in report
    assert f"- fail_fast_ms: {fast}" in report and f"- breaker_off_ms: {off}" in report
    assert "- fault_id: preset-payment-outage" in report
    assert "shown (Show me)" not in report and report.count(", done, ") == 6
    assert f"answer: {speedup} (right" in report and "answer: half-open (right" in report
    data = json.loads(_download(tab, "report-json"))
    steps = {s["key"]: s for s in data["steps"]}
    assert steps["fail-fast"]["observed"]["fail_fast_ms"] == fast
    assert steps["breaker-off"]["observed"]["breaker_off_ms"] == off
    assert steps["recover"]["observed"]["breaker_state"] == "closed"
    assert data["finished_at"] and all(a["correct"] for a in data["answers"])
