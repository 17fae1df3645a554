"""The services' browsable APIs in a real headless Chromium: log in, place an order from the form, list what is yours.

What a student does: open order_service's browsable API, follow "Log in", log
in as the seeded alice, open /api/orders/, paste a card token into the raw-data
form (its idempotency key already generated and shown), POST, and read the
created order; then look at their payments and addresses on the other
services, whose pages the same login cookie opens (cookies belong to a host,
not to a port).
"""

from __future__ import annotations

import json
import re
import shutil

import requests
from playwright.sync_api import expect

from .conftest import SCREENSHOTS, Page

ALICE = ("alice@lab.local", "alice-lab-2024")


def _alice_card(lab) -> str:
    """A card of alice's, saved through the payment API (what the student pastes into the form)."""
    login = requests.post(
        f"{lab.urls['user']}/api/auth/login/", json={"email": ALICE[0], "password": ALICE[1]}, timeout=30
    )
    assert login.status_code == 200, login.text
    card = requests.post(
        f"{lab.urls['payment']}/api/payment-methods/",
        json={"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123"},
        headers={"Authorization": f"Bearer {login.json()['access']}"},
        timeout=30,
    )
    assert card.status_code == 201, card.text
    return card.json()["token"]


def test_log_in_and_place_an_order_from_the_browsable_api(context, lab):
    """Ensure a student can log in on the browsable API, place an order from its form, and list their payments."""
    card = _alice_card(lab)
    order_url = lab.urls["order"]
    page = Page(context, order_url)
    failed: list[tuple[int, str]] = []
    page.tab.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)

    tab = page.open("/api/orders/")
    expect(tab.locator(".response-info")).to_contain_text("HTTP 401")
    tab.locator("[data-testid=browsable-login]").click()
    tab.wait_for_url(re.compile(r"/api-auth/login/\?next=%2Fapi%2Forders%2F$"))
    tab.fill("#id_email", ALICE[0])
    tab.fill("#id_password", ALICE[1])
    tab.locator("[data-testid=login-submit]").click()
    tab.wait_for_url(f"{order_url}/api/orders/")
    expect(tab.locator("[data-testid=browsable-user]")).to_contain_text("alice@lab.local")
    expect(tab.locator(".response-info")).to_contain_text("HTTP 200 OK")

    # The key shown in the note is the one at the top of the raw-data form.
    key = tab.locator("[data-testid=browsable-idempotency-note] code").first.inner_text()
    textarea = tab.locator("#post-generic-content-form textarea")
    prefilled = json.loads(textarea.input_value())
    assert list(prefilled)[0] == "idempotency_key" and prefilled["idempotency_key"] == key
    assert prefilled["lines"] == [{"sku": "KB-001", "quantity": 1}]
    textarea.fill(json.dumps({**prefilled, "payment_method": card}, indent=4))
    with tab.expect_response(lambda r: r.request.method == "POST" and r.url == f"{order_url}/api/orders/") as posted:
        tab.locator("#post-generic-content-form button.btn-primary").click()
    assert posted.value.status == 201, posted.value.text()[:2000]
    expect(tab.locator(".response-info")).to_contain_text("HTTP 201 Created")
    expect(tab.locator(".response-info")).to_contain_text('"status": "CONFIRMED"')
    created = re.search(r'"id": (\d+)', tab.locator(".response-info").inner_text())
    assert created, tab.locator(".response-info").inner_text()
    order_id = int(created[1])
    expect(tab.locator("[data-testid=browsable-user]")).to_contain_text("alice@lab.local")
    page.screenshot("browsable-order-created")
    shutil.copyfile(SCREENSHOTS / "browsable-order-created.png", "/tmp/browsable.png")

    # The same cookie opens alice's pages on the other services (same host, other ports).
    payments = page.tab
    payments.goto(f"{lab.urls['payment']}/api/payments/")
    expect(payments.locator("[data-testid=browsable-user]")).to_contain_text("alice@lab.local")
    expect(payments.locator(".response-info")).to_contain_text("HTTP 200 OK")
    expect(payments.locator(".response-info")).to_contain_text(f'"order_id": "{order_id}"')
    payments.goto(f"{lab.urls['user']}/api/users/me/addresses/")
    expect(payments.locator(".response-info")).to_contain_text("HTTP 200 OK")

    # The cookie is no API credential: a JSON call with it is anonymous.
    anonymous = context.request.get(f"{order_url}/api/orders/", headers={"Accept": "application/json"})
    assert anonymous.status == 401
    # Nothing failed but the anonymous first visit, and no script broke (the browsable pages have
    # no favicon: Chromium's own 404s for it are the only other console errors).
    assert failed == [(401, f"{order_url}/api/orders/")], failed
    assert [e for e in page.errors if "Failed to load resource" not in e] == [], page.errors
