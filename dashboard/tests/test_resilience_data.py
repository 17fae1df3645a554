"""The Resilience and Data pages say what they show: switches where they govern a call, euros under euro headings."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from console import selectors

pytestmark = pytest.mark.django_db

SWITCHES = {
    "timeouts": {"enabled": True, "connect": 1.0, "read": 5.0},
    "retries": {"enabled": True, "attempts": 3, "backoff": 0.1},
    "breaker": {"enabled": True, "fail_max": 5, "reset_timeout": 10},
    "bulkhead": {"enabled": True, "max_concurrent": 16},
    "fallback": {"enabled": True},
}


def _breaker(state: str = "closed", opened_at: str | None = None, fail_counter: int = 0) -> dict:
    return {"state": state, "fail_counter": fail_counter, "fail_max": 5, "reset_timeout": 10, "opened_at": opened_at}


def _resilience(lab, *, switches=None, breakers=None) -> None:
    """Order calls inventory and payment (a breaker for each); the others call nobody."""
    for service in ("user", "inventory", "payment"):
        lab[service].on("GET", "/_lab/resilience/", 200, {"service": service, "switches": SWITCHES, "breakers": {}})
    lab["order"].on(
        "GET",
        "/_lab/resilience/",
        200,
        {
            "service": "order",
            "switches": switches or SWITCHES,
            "breakers": breakers or {"inventory": _breaker(), "payment": _breaker()},
        },
    )


def _form(html: str, service: str) -> str:
    match = re.search(rf'<form [^>]*data-testid="switches-{service}">(.*?)</form>', html, re.S)
    assert match, f"no switches form for {service}"
    return match.group(1)


def _fieldset(form: str, section: str) -> str:
    match = re.search(rf'<fieldset [^>]*data-switch="{section}"[^>]*>', form)
    assert match, section
    return match.group(0)


def test_only_a_service_that_calls_peers_has_a_switches_panel(staff, lab):
    """Ensure a service calling no peer has no panel, unless its fallback serves something of its own."""
    _resilience(lab)
    html = staff.get("/resilience/").content.decode()
    assert 'data-testid="switches-order"' in html
    for service in ("user", "payment"):
        assert f'data-testid="switches-{service}"' not in html
    notice = re.search(r'data-testid="no-peers">(.*?)</p>', html, re.S).group(1)
    assert "<strong>Users</strong> and <strong>Payments</strong>" in notice and "Inventory" not in notice
    assert "call no peer" in notice and "govern nothing" in notice


def test_inventory_has_a_panel_with_its_own_fallback_only(staff, lab):
    """Ensure inventory (no peer, a fallback of its own) shows the fallback switch alone, and says what it serves."""
    _resilience(lab)
    form = _form(staff.get("/resilience/").content.decode(), "inventory")
    assert re.findall(r'data-switch="(\w+)"', form) == ["fallback"]
    assert "last good page, marked stale" in form
    assert '<input type="hidden" name="sections" value="fallback">' in form


def test_inventory_fallback_form_changes_the_fallback_alone(staff, lab):
    """Ensure unticking inventory's fallback PUTs only that switch, not its (hidden) timeouts or retries."""
    _resilience(lab)
    lab["inventory"].on("PUT", "/_lab/resilience/", 200, {"service": "inventory", "switches": SWITCHES})
    response = staff.post("/resilience/inventory/", {"sections": "fallback"})
    assert response.status_code == 302
    (put,) = lab["inventory"].sent("PUT", "/_lab/resilience/")
    assert put["json"] == {"fallback": {"enabled": False}}


def test_a_service_whose_switches_cannot_be_read_keeps_its_panel_with_the_reason(staff, lab):
    """Ensure an unreadable service is not taken for one without peers."""
    _resilience(lab)
    lab["payment"].routes.pop(("GET", "/_lab/resilience/"))
    html = staff.get("/resilience/").content.decode()
    assert "Could not read the switches" in _form(html, "payment")
    notice = re.search(r'data-testid="no-peers">(.*?)</p>', html, re.S).group(1)
    assert "Payments" not in notice and "<strong>Users</strong>" in notice


def test_a_closed_breaker_shows_no_opened_at_and_its_threshold_in_failures(client, lab):
    """Ensure a breaker closed after having opened shows no stale timestamp; the threshold reads as a count."""
    _resilience(lab, breakers={"inventory": _breaker(), "payment": _breaker(opened_at="2026-12-03T09:14:07+00:00")})
    html = client.get("/partials/resilience/").content.decode()
    row = re.search(r'<tr data-breaker="order-payment".*?</tr>', html, re.S).group(0)
    assert "2026-12-03" not in row and "09:14:07" not in row
    assert '<td class="small" data-testid="open-since">—</td>' in row
    assert ">5 failures<" in row
    assert "Opens after" in html and "Opens at" not in html and "Opened at" not in html


@pytest.mark.parametrize("state", ["open", "half-open"])
def test_an_open_breaker_says_since_when_in_words(client, lab, state):
    _resilience(lab, breakers={"inventory": _breaker(), "payment": _breaker(state, "2026-12-03T09:14:07+00:00", 5)})
    html = client.get("/partials/resilience/").content.decode()
    row = re.search(r'<tr data-breaker="order-payment".*?</tr>', html, re.S).group(0)
    since = re.search(r'data-testid="open-since">([^<]*)<', row).group(1)
    assert re.fullmatch(r"09:14:07 UTC \(\d+ (s|min|h) ago\)", since), since


@pytest.mark.parametrize(
    ("opened", "said"),
    [
        ("2026-12-03T09:14:07+00:00", "09:14:07 UTC (42 s ago)"),
        ("2026-12-03T09:09:49+00:00", "09:09:49 UTC (5 min ago)"),
        ("2026-12-03T06:14:49", "06:14:49 UTC (3 h ago)"),  # a naive time is UTC, as the chassis writes it
        ("2026-12-03T10:14:49+01:00", "09:14:49 UTC (0 s ago)"),
    ],
)
def test_open_since_in_words(opened, said):
    now = datetime(2026, 12, 3, 9, 14, 49, tzinfo=UTC)
    assert selectors._breaker_row(_breaker("open", opened), now)["open_since"] == said
    assert selectors._breaker_row(_breaker("closed", opened), now)["open_since"] == ""
    assert selectors._breaker_row(_breaker("open", "not a time"), now)["open_since"] == ""


def test_a_switched_off_defence_is_rendered_disabled(staff, lab):
    """Ensure an off switch's fieldset is disabled (settings greyed), an on one is not; its checkbox stays usable."""
    _resilience(lab, switches={**SWITCHES, "breaker": {**SWITCHES["breaker"], "enabled": False}})
    form = _form(staff.get("/resilience/").content.decode(), "order")
    assert re.search(r"\sdisabled>", _fieldset(form, "breaker"))
    for section in ("timeouts", "retries", "bulkhead", "fallback"):
        assert "disabled" not in _fieldset(form, section), section
    box = re.search(r'<input type="checkbox" name="breaker.enabled"[^>]*>', form).group(0)
    assert "checked" not in box and "disabled" not in box  # in the legend: a disabled fieldset leaves it usable


def test_the_page_script_follows_the_switch():
    """Ensure the static script disables a switch's fieldset when its legend's checkbox is unticked."""
    from django.contrib.staticfiles import finders

    with open(finders.find("console/console.js"), encoding="utf-8") as file:
        script = file.read()
    assert 'querySelectorAll("fieldset[data-switch]")' in script
    assert "fieldset.disabled = !box.checked" in script


PRODUCTS = {
    "count": 44,
    "results": [
        {"sku": f"AU-{i:03d}", "name": f"Item {i}", "price_cents": 17900 + i, "currency": "EUR", "available": 5}
        for i in range(8)
    ],
}


def _data(lab, *, products=PRODUCTS) -> None:
    lab["user"].on(
        "GET",
        "/api/users/",
        200,
        {"count": 2, "results": [{"id": 1, "email": "a@lab.local", "name": "A", "is_staff": False}]},
    )
    lab["inventory"].on("GET", "/api/products/", 200, products)
    lab["order"].on(
        "GET",
        "/api/orders/",
        200,
        {"count": 1, "results": [{"id": "o-1", "status": "CONFIRMED", "total_cents": 8900, "currency": "EUR"}]},
    )
    lab["payment"].on(
        "GET",
        "/api/payments/",
        200,
        {"count": 1, "results": [{"order_id": "o-1", "amount_cents": 8900, "refunded_cents": 0, "currency": "EUR"}]},
    )
    lab["payment"].on(
        "GET",
        "/api/ledger/",
        200,
        {"count": 1, "results": [{"kind": "charge", "order_id": "o-1", "amount_cents": 8900, "currency": "EUR"}]},
    )


def _table(html: str, service: str, index: int = 0) -> tuple[list[str], list[list[str]]]:
    panel = re.search(rf'data-testid="data-{service}">(.*?)</section>', html, re.S).group(1)
    table = re.findall(r"<table.*?</table>", panel, re.S)[index]
    headings = re.findall(r"<th[^>]*>([^<]*)</th>", table)
    rows = [
        re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    ]
    return headings, rows


def test_money_headings_say_the_currency_the_cells_are_in(staff, lab):
    """Ensure price_cents 17900 is shown as 179.00 under "price (EUR)", and no heading says cents any more."""
    _data(lab)
    html = staff.get("/data/").content.decode()
    headings, rows = _table(html, "inventory")
    assert headings == ["sku", "name", "price (EUR)", "available"]  # no currency column: the heading says it
    assert rows[0][2] == "179.00" and rows[1][2] == "179.01"
    assert _table(html, "order")[0] == ["id", "status", "total (EUR)"]
    assert _table(html, "order")[1][0][2] == "89.00"
    assert _table(html, "payment", 0)[0] == ["order_id", "amount (EUR)", "refunded (EUR)"]
    assert _table(html, "payment", 1)[0] == ["kind", "order_id", "amount (EUR)"]
    assert not re.search(r"<th[^>]*>[^<]*_cents</th>", html)
    assert 'title="price_cents in the API, shown divided by 100"' in html


def test_mixed_currencies_are_said_in_each_cell(staff, lab):
    mixed = {
        "count": 2,
        "results": [
            {"sku": "A", "price_cents": 1000, "currency": "EUR"},
            {"sku": "B", "price_cents": 250, "currency": "USD"},
        ],
    }
    _data(lab, products=mixed)
    headings, rows = _table(staff.get("/data/").content.decode(), "inventory")
    assert headings == ["sku", "price", "currency"]
    assert [r[1] for r in rows] == ["10.00 EUR", "2.50 USD"]


def test_each_table_says_how_many_rows_it_shows_and_no_heading_is_said_twice(staff, lab):
    _data(lab)
    html = staff.get("/data/").content.decode()
    assert re.search(r'data-testid="shown-inventory-1">· showing 8 of 44<', html)
    assert re.search(r'data-testid="shown-user-1">· showing 1 of 2<', html)
    assert "in all" not in html
    users = re.search(r'data-testid="data-user">(.*?)</section>', html, re.S).group(1)
    assert users.count("Users") == 1  # the service's heading, not again over its one table
    payments = re.search(r'data-testid="data-payment">(.*?)</section>', html, re.S).group(1)
    assert "<strong>Ledger</strong>" in payments and "<strong>Payments</strong>" not in payments
    assert 'class="table-wrap"' in html  # a wide table scrolls inside its panel


def test_data_page_without_public_read_sends_to_the_login(client, lab, settings):
    settings.DASHBOARD_PUBLIC_READ = False
    response = client.get("/data/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
