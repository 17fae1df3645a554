"""The dashboard in a real headless Chromium, against a real running lab.

What a student or an instructor does all day: open each page, break a
service with a preset and watch the overview turn red, run the checkout flow
and read its trace, clear every fault, check the audit.
"""

from __future__ import annotations

import re
import time
import uuid

import requests
from playwright.sync_api import expect

from .conftest import Page
from .lab import ROOT

PAGES = ["/", "/faults/", "/resilience/", "/flows/", "/traces/", "/data/", "/audit/", "/load/", "/labs/"]
SERVICES = ("user", "order", "inventory", "payment")
FLOWS = ("register", "browse", "checkout-sync", "checkout-async", "declined", "idempotent", "cancel-refund")


def test_each_page_shows_what_it_is_for(staff, browser, lab, admin_api):
    """Ensure each page shows its real content from the running lab, polls once, and logs no error.

    Not a heading: the overview's cards up, each service's faults as the
    service lists them, order's breakers with the threshold order reports, a
    request of this test in the trace list, a product of the catalog on the
    Data page, the audit's checks, every scenario and lab, logged in or not.
    """
    request_id = f"pages-{uuid.uuid4().hex[:12]}"
    products = requests.get(
        f"{lab.urls['inventory']}/api/products/", headers={"X-Request-ID": request_id}, timeout=10
    ).json()["results"]
    product = products[0]
    order_lab = admin_api.get(f"{lab.urls['order']}/_lab/resilience/", timeout=10).json()
    assert set(order_lab["breakers"]) == {"inventory", "payment"}, order_lab
    scenarios = sorted(p.stem for p in (ROOT / "loadtests").glob("*.py") if p.stem in _load_scenarios())
    labs = sorted(p.name for p in (ROOT / "labs").iterdir() if (p / "lab.md").is_file())
    watching = browser.new_context(viewport={"width": 1366, "height": 900})  # no cookie of the staff tab's
    watching.set_default_timeout(15_000)
    anonymous = Page(watching, lab.urls["dashboard"])

    for page in (staff, anonymous):
        tab = page.open("/")
        for service in SERVICES:
            expect(tab.locator(f"article.card[data-service={service}]")).to_have_attribute("data-state", "up")
        expect(tab.get_by_test_id("fault-banner")).to_contain_text("Every service answers its health check")
        expect(tab.locator("[data-node=order]")).to_have_attribute("data-state", "up")

        tab = page.open("/faults/")
        for service in SERVICES:
            count = str(len(admin_api.faults(service)))
            expect(tab.get_by_test_id(f"faults-{service}")).to_have_attribute("data-count", count)
        expect(tab.get_by_test_id("faults-payment")).to_contain_text("Healthy: nothing injected.")
        if page is staff:  # a watcher sees the faults, not the controls
            expect(tab.get_by_test_id("preset-lasts-payment-outage")).to_contain_text("2 minutes")
        expect(tab.get_by_test_id("worker-process")).to_contain_text("Celery worker process")

        tab = page.open("/resilience/")
        for peer, breaker in order_lab["breakers"].items():
            row = tab.locator(f"[data-testid=breakers] tr[data-breaker=order-{peer}]")
            expect(row).to_have_attribute("data-state", breaker["state"])
            expect(row).to_contain_text(f"{breaker['fail_max']} failures")
        expect(tab.get_by_test_id("switches-order")).to_be_visible()

        tab = page.open("/flows/")
        for flow in FLOWS:
            button = tab.get_by_test_id(f"flow-{flow}")
            expect(button).to_be_enabled() if page is staff else expect(button).to_be_disabled()

        tab = page.open(f"/traces/?request_id={request_id}")
        root = tab.locator("#trace-filters ~ div tbody tr td:nth-child(2)")
        expect(root).to_contain_text("GET api/products/", timeout=15_000)  # exported within a second; polled
        expect(root.locator(".wf-svc")).to_have_text("inventory")

        tab = page.open("/data/")
        if page is staff:
            inventory = tab.get_by_test_id("data-inventory")
            expect(inventory.locator("td", has_text=product["sku"]).first).to_be_visible()
            expect(inventory.locator("td", has_text=product["name"]).first).to_be_visible()
            expect(tab.get_by_test_id("data-needs-login")).to_have_count(0)
        else:
            expect(tab.get_by_test_id("data-needs-login")).to_contain_text("This page needs a staff login.")

        tab = page.open("/audit/")
        result = tab.get_by_test_id("audit-result")
        expect(result).to_be_visible(timeout=20_000)
        assert tab.locator("[data-check]").count() >= 3

        tab = page.open("/load/")
        for scenario in scenarios:
            expect(tab.get_by_test_id(f"scenario-{scenario}")).not_to_be_empty()
        expect(tab.get_by_test_id("load-start")).to_have_count(1 if page is staff else 0)

        tab = page.open("/labs/")
        expect(tab.get_by_test_id("lab-list")).to_be_visible()
        broken = tab.get_by_test_id("labs-broken")
        broken = broken.inner_text() if broken.count() else ""  # a lab being written may not load: it says so
        for name in labs:
            if name not in broken:
                expect(tab.get_by_test_id(f"lab-{name}")).to_be_visible()
        assert sum(name not in broken for name in labs) >= 5, (labs, broken)

        if page is anonymous:
            tab = page.open("/login/")
            expect(tab.locator("form #email")).to_be_editable()
            expect(tab.locator("form #password")).to_be_editable()
        tab.wait_for_timeout(2300)  # one live refresh of the last page's polled parts
        assert page.errors == [], page.errors
    watching.close()
    staff.open("/")
    staff.tab.wait_for_timeout(2300)
    staff.screenshot("overview-idle")


def _load_scenarios() -> tuple[str, ...]:
    from labctl import facade

    return facade.load_scenarios()


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
