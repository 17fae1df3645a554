"""The dashboard in a real headless Chromium, against a real running lab.

What a student or an instructor does all day: open each page, break a
service with a preset and watch the overview turn red, run the checkout flow
and read its trace, clear every fault, check the audit.
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from .conftest import Page

PAGES = ["/", "/faults/", "/resilience/", "/flows/", "/traces/", "/data/", "/audit/", "/load/"]


def test_each_page_loads_without_console_errors(staff, anonymous):
    """Ensure every page renders, polls at least once, and logs no error, logged in or not."""
    for page in (staff, anonymous):
        for path in PAGES + (["/login/"] if page is anonymous else []):
            tab = page.open(path)
            expect(tab.locator("main h1")).to_be_visible()
            tab.wait_for_timeout(2300)  # one live refresh of the polled parts
        assert page.errors == [], page.errors
    staff.open("/")
    staff.tab.wait_for_timeout(2300)
    staff.screenshot("overview-idle")


def test_anonymous_visitors_see_no_controls(anonymous):
    tab = anonymous.open("/faults/")
    expect(tab.get_by_text("You are watching.")).to_be_visible()
    expect(tab.locator("[data-testid=clear-all]")).to_have_count(0)
    expect(tab.locator("form.fault-form")).to_have_count(0)


def test_payment_outage_turns_payments_card_red(staff, context, lab, admin_api):
    """Ensure the preset reaches payment's /_lab/faults/ and the live overview shows it within seconds."""
    overview = staff.open("/")
    card = overview.locator("article.card[data-service=payment]")
    expect(card).to_have_attribute("data-state", "up")

    controls = Page(context, lab.urls["dashboard"])  # a second tab, as an instructor would
    tab = controls.open("/faults/")
    tab.click("[data-testid=preset-payment-outage]")
    expect(tab.locator(".messages")).to_contain_text("Payment outage: injected on payment")
    expect(tab.locator("[data-testid=faults-payment]")).to_have_attribute("data-count", "1")
    controls.screenshot("faults", docs=True)

    expect(card).to_have_attribute("data-state", "outage", timeout=8_000)  # the htmx refresh, no reload
    expect(card).to_have_class(re.compile(r"\bis-bad\b"))
    expect(overview.locator("[data-node=payment]")).to_have_attribute("data-state", "outage")
    expect(overview.locator("[data-testid=fault-banner]")).to_contain_text("payment")
    (fault,) = admin_api.faults("payment")
    assert fault["id"] == "preset-payment-outage"
    assert fault["kind"] == "outage" and fault["expires_at"]
    assert staff.errors == [] and controls.errors == []
    staff.screenshot("overview-payment-outage")


def test_the_services_validation_message_shows_next_to_the_form(staff, admin_api):
    tab = staff.open("/faults/")
    form = tab.locator("[data-testid=fault-form-inventory]")
    form.locator("select[name=kind]").select_option("latency")
    form.locator("input[name=delay_ms]").fill("0")
    form.locator("button[type=submit]").click()
    expect(tab.locator("[data-testid=fault-errors-inventory]")).to_contain_text("delay_ms")
    assert admin_api.faults("inventory") == []


def test_checkout_flow_shows_a_waterfall_across_four_services(staff, context, lab):
    """Ensure the checkout flow's page lists its hops and draws one trace with spans of at least four services.

    This needs the services to trace (chassis.telemetry) and to send their
    spans to the dashboard's collector.
    """
    watching = Page(context, lab.urls["dashboard"])  # the overview, polling while the flow runs
    watching.open("/")
    tab = staff.open("/flows/")
    tab.click("[data-testid=flow-checkout-sync]")
    tab.wait_for_url(re.compile(r"/flows/runs/[0-9a-f-]+/$"))
    expect(tab.locator("[data-testid=flow-verdict]")).to_have_attribute("data-ok", "true")
    # 5 hops for a first run (register, log in, save card, browse, order), fewer once the customer is prepared.
    expect(tab.locator("[data-testid=hops]")).to_contain_text("place the order")
    expect(tab.locator("[data-testid=order-hop-latency]")).to_contain_text("ms")
    expect(tab.locator("[data-testid=history]")).to_contain_text("CONFIRMED")
    waterfall = tab.locator("[data-testid=waterfall][data-settled=true]")
    expect(waterfall).to_have_count(1, timeout=25_000)
    services = set(waterfall.get_attribute("data-services").split())
    assert {"user", "order", "inventory", "payment"} <= services, services
    assert int(waterfall.get_attribute("data-spans")) >= 8
    staff.screenshot("flow", docs=True, docs_full_page=True)

    watching.tab.bring_to_front()
    rate = watching.tab.locator("article.card[data-service=order] .number b").first
    expect(rate).not_to_have_text(re.compile(r"^(—|0\.0)$"), timeout=8_000)  # the flow's traffic, live
    watching.screenshot("overview", docs=True)
    assert watching.errors == []


def test_async_checkout_flow_runs_on_the_worker(staff, lab):
    """Ensure the async checkout answers 202, the Celery worker confirms the order, and the trace shows the worker."""
    lab.start_worker()
    try:
        tab = staff.open("/flows/")
        tab.click("[data-testid=flow-checkout-async]")
        tab.wait_for_url(re.compile(r"/flows/runs/[0-9a-f-]+/$"), timeout=45_000)
        expect(tab.locator("[data-testid=flow-verdict]")).to_have_attribute("data-ok", "true")
        expect(tab.locator("[data-testid=hops]")).to_contain_text("/_lab/saga/")
        expect(tab.locator("[data-testid=hops]")).to_contain_text("202")
        assert "PUT" not in tab.locator("[data-testid=hops]").inner_text()  # the lab's mode was never switched
        waterfall = tab.locator("[data-testid=waterfall][data-settled=true]")
        expect(waterfall).to_have_count(1, timeout=25_000)
        assert "worker" in waterfall.get_attribute("data-services").split()
        staff.screenshot("flow-async")
    finally:
        lab.stop_celery()


def test_clear_all_clears_every_service(staff, admin_api):
    """Ensure one button empties every service's faults, as the services themselves report."""
    tab = staff.open("/faults/")
    for preset, said in (
        ("payment-outage", "Payment outage: injected on payment"),
        ("slow-inventory", "Slow inventory 800 ms: injected on inventory"),
        ("orders-db-down", "Database down on orders: injected on order"),
    ):
        tab.click(f"[data-testid=preset-{preset}]")
        expect(tab.locator(".messages")).to_contain_text(said)
    form = tab.locator("[data-testid=fault-form-user]")
    form.locator("select[name=kind]").select_option("error")
    form.locator("input[name=status]").fill("500")
    form.locator("input[name=probability]").fill("10")
    form.locator("button[type=submit]").click()
    expect(tab.locator(".messages")).to_contain_text("Injected a error fault on user")
    for service in ("user", "order", "inventory", "payment"):
        assert eventually(lambda s=service: admin_api.faults(s) != [], seconds=3), f"{service} has no fault to clear"

    tab.click("[data-testid=clear-all]")
    expect(tab.locator(".messages")).to_contain_text("on 4 of 4 services")
    for service in ("user", "order", "inventory", "payment"):
        # Each service process re-reads the shared fault list within a second (LAB_STATE_REFRESH).
        assert eventually(lambda s=service: admin_api.faults(s) == [], seconds=3), f"{service} still has faults"
        expect(tab.locator(f"[data-testid=faults-{service}]")).to_have_attribute("data-count", "0")
    overview = staff.open("/")
    expect(overview.locator("[data-testid=fault-banner]")).to_contain_text("No fault injected")


def eventually(check, *, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_audit_is_green_after_a_clean_run(staff):
    """Ensure the audit finds every invariant holding once the flows have run and faults are cleared."""
    tab = staff.open("/audit/")
    result = tab.locator("[data-testid=audit-result]")
    expect(result).to_be_visible(timeout=20_000)
    assert result.get_attribute("data-ok") == "true", result.inner_text()
    staff.screenshot("audit")
