"""The dashboard's layout at laptop widths, measured from element boxes in a real Chromium.

A student's laptop shows 1280 to 1366 px: the navigation stays on one line,
no page is wider than the window, a card's state badge stays on its title's
line, and the Data page's money columns say in their heading what their
cells show. The Resilience page shows switches only for a service that calls
peers, and a switched-off defence looks off.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

WIDTHS = (1280, 1366)
SHOTS = Path(os.environ.get("LAB_LAYOUT_SCREENSHOTS", "/tmp"))

BOXES = """(selector) => [...document.querySelectorAll(selector)].map((e) => {
  const r = e.getBoundingClientRect();
  return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, height: r.height, width: r.width};
})"""
WIDER_THAN_WINDOW = """() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
  wide: [...document.querySelectorAll("main *")]
    .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
    .filter((e) => !e.closest(".table-wrap") || e.classList.contains("table-wrap")).slice(0, 5)
    .map((e) => e.tagName + "." + e.className)})"""


def _boxes(tab, selector: str) -> list[dict]:
    return tab.evaluate(BOXES, selector)


def _box(tab, selector: str) -> dict:
    (box,) = _boxes(tab, selector)
    return box


def _line_height(tab, selector: str) -> float:
    return tab.evaluate(
        """(s) => { const e = document.querySelector(s); const cs = getComputedStyle(e);
        return cs.lineHeight === "normal" ? parseFloat(cs.fontSize) * 1.2 : parseFloat(cs.lineHeight); }""",
        selector,
    )


def _shot(page, name: str) -> None:
    page.tab.screenshot(path=str(SHOTS / f"dash-{name}.png"), full_page=True)


@pytest.mark.parametrize("width", WIDTHS)
def test_logged_in_navigation_stays_on_one_line(staff, width):
    """Ensure every nav link shares one top, and the login box sits on the same header line."""
    staff.tab.set_viewport_size({"width": width, "height": 800})
    tab = staff.open("/resilience/")
    links = _boxes(tab, "header.top nav a")
    assert len(links) >= 8
    tops = {round(link["top"]) for link in links}
    assert len(tops) == 1, f"the navigation wraps at {width} px: link tops {sorted(tops)}"
    nav, who, brand = _box(tab, "header.top nav"), _box(tab, "header.top .who"), _box(tab, "header.top .brand")
    assert nav["height"] <= links[0]["height"] + 1, (nav, links[0])
    for part in (who, brand):  # one header line: every part overlaps the links' line
        assert part["top"] < links[0]["bottom"] and part["bottom"] > links[0]["top"], (part, links[0])
    assert tab.evaluate("document.documentElement.scrollWidth") <= width
    if width == 1366:
        _shot(staff, "resilience-1366")
    assert staff.errors == []


@pytest.mark.parametrize("width", WIDTHS)
def test_inventory_badge_stays_on_its_title_line(anonymous, staff, width):
    """Ensure each service card's state badge starts within the first line of the card's title."""
    for page in (anonymous, staff):
        page.tab.set_viewport_size({"width": width, "height": 800})
        tab = page.open("/")
        expect(tab.locator("article.card[data-service=inventory]")).to_be_visible()
        for service in ("user", "order", "inventory", "payment"):
            card = f"article.card[data-service={service}]"
            title, badge = _box(tab, f"{card} h3"), _box(tab, f"{card} .spread > .state")
            line = _line_height(tab, f"{card} h3")
            assert title["top"] - 1 <= badge["top"] < title["top"] + line, (service, width, title, badge, line)
            assert badge["left"] >= title["right"] - 1, (service, title, badge)  # beside it, not under it
        assert tab.evaluate("document.documentElement.scrollWidth") <= width
    if width == 1366:
        _shot(staff, "overview-1366")
    assert anonymous.errors == [] and staff.errors == []


@pytest.fixture(scope="module")
def priced_product(admin_api, lab):
    """A product of 179.00 EUR (17900 cents), first in the catalogue's sku order."""
    sku = f"AA-{uuid.uuid4().hex[:6].upper()}"
    response = admin_api.post(
        f"{lab.urls['inventory']}/api/products/",
        json={
            "sku": sku,
            "name": f"Layout item {sku}",
            "description": "made by the layout test",
            "price_cents": 17900,
            "currency": "EUR",
            "initial_stock": 3,
        },
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return sku


@pytest.mark.parametrize("width", WIDTHS)
def test_data_page_fits_and_its_money_columns_say_euros(staff, admin_api, lab, priced_product, width):
    """Ensure no element of the Data page is wider than the window and money headings match their cells."""
    staff.tab.set_viewport_size({"width": width, "height": 800})
    tab = staff.open("/data/")
    products = tab.locator("[data-testid=data-inventory] table")
    expect(products).to_be_visible()
    fit = tab.evaluate(WIDER_THAN_WINDOW)
    assert fit["scroll"] <= fit["inner"], fit
    assert fit["wide"] == [], fit
    for panel in ("user", "order", "inventory", "payment"):
        right = _box(tab, f"[data-testid=data-{panel}]")["right"]
        for wrap in _boxes(tab, f"[data-testid=data-{panel}] .table-wrap"):
            assert wrap["right"] <= right, (panel, wrap, right)  # a wide table scrolls inside its panel

    headings = [h.strip() for h in products.locator("thead th").all_inner_texts()]
    assert "price (EUR)" in headings and not [h for h in headings if "cents" in h.lower()], headings
    price = headings.index("price (EUR)")
    row = products.locator("tbody tr", has=tab.locator(f"td:text-is('{priced_product}')"))
    assert row.locator("td").nth(price).inner_text() == "179.00"
    all_headings = " ".join(tab.locator("[data-testid^=data-] thead th").all_inner_texts())
    assert "_cents" not in all_headings.lower(), all_headings

    assert tab.locator("[data-testid=data-user] h2").inner_text() == "Users"
    assert tab.locator("[data-testid=data-user] .table-title strong").count() == 0  # no second "Users"
    shown = tab.locator("[data-testid=shown-inventory-1]").inner_text()
    count = admin_api.get(f"{lab.urls['inventory']}/api/products/", timeout=10).json()["count"]
    assert shown == f"· showing {min(count, 8)} of {count}", shown
    if width == 1366:
        _shot(staff, "data-1366")
    assert staff.errors == []


def test_data_page_tells_a_watcher_it_needs_a_staff_login(anonymous):
    tab = anonymous.open("/data/")
    assert tab.url.endswith("/data/")  # not bounced to the login form
    notice = tab.locator("[data-testid=data-needs-login]")
    expect(notice).to_contain_text("needs a staff login")
    expect(notice.get_by_role("link", name="Log in as staff")).to_have_attribute("href", "/login/?next=/data/")
    assert anonymous.errors == []


def test_resilience_switches_only_for_callers_and_off_looks_off(staff, admin_api, lab):
    """Ensure order has a switches panel, inventory its own fallback alone, and unticking a defence disables its
    settings at once."""
    staff.tab.set_viewport_size({"width": 1366, "height": 800})
    tab = staff.open("/resilience/")
    expect(tab.locator("[data-testid=switches-order]")).to_be_visible()
    for service in ("user", "payment"):
        expect(tab.locator(f"[data-testid=switches-{service}]")).to_have_count(0)
    inventory = tab.locator("[data-testid=switches-inventory]")
    expect(inventory.locator("fieldset[data-switch]")).to_have_count(1)
    expect(inventory.locator("fieldset[data-switch=fallback]")).to_contain_text("marked stale")
    expect(tab.locator("[data-testid=no-peers]")).to_contain_text("call no peer")
    closed = tab.locator("[data-breaker=order-payment]")
    expect(closed).to_have_attribute("data-state", "closed")
    expect(closed.locator("[data-testid=open-since]")).to_have_text("—")
    fail_max = admin_api.get(f"{lab.urls['order']}/_lab/resilience/", timeout=10).json()["breakers"]["payment"]
    expect(closed).to_contain_text(f"{fail_max['fail_max']} failures")  # a threshold, not a time

    form = tab.locator("[data-testid=switches-order]")
    breaker = form.locator("fieldset[data-switch=breaker]")
    fail_max = breaker.locator("input[name='breaker.fail_max']")
    expect(fail_max).to_be_enabled()
    assert float(fail_max.evaluate("e => getComputedStyle(e.closest('.field')).opacity")) == 1
    breaker.locator("input[name='breaker.enabled']").uncheck()
    expect(fail_max).to_be_disabled()  # the script, before anything is sent
    assert float(fail_max.evaluate("e => getComputedStyle(e.closest('.field')).opacity")) < 1
    form.get_by_role("button", name="Apply to order").click()
    expect(tab.locator(".messages")).to_contain_text("Updated order's resilience switches")
    try:
        breaker = tab.locator("[data-testid=switches-order] fieldset[data-switch=breaker]")
        expect(breaker.locator("input[name='breaker.enabled']")).not_to_be_checked()
        expect(breaker.locator("input[name='breaker.fail_max']")).to_be_disabled()  # rendered so by the server
        expect(breaker.locator("input[name='breaker.enabled']")).to_be_enabled()
        _shot(staff, "resilience-breaker-off-1366")
    finally:
        admin_api.delete(f"{lab.urls['order']}/_lab/resilience/", timeout=10)
    switches = admin_api.get(f"{lab.urls['order']}/_lab/resilience/", timeout=10).json()["switches"]
    assert switches["breaker"]["enabled"] is True
    assert staff.errors == []
