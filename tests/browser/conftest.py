"""Fixtures of the browser tests: one running lab with its dashboard, and a real headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from .lab import ROOT, start_lab_with_dashboard

CHROMIUM = os.environ.get("LAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "var" / "screenshots"
DOC_SCREENSHOTS = ROOT / "docs" / "screenshots"
ADMIN = ("admin@lab.local", os.environ.get("LAB_ADMIN_PASSWORD", "admin-lab-2024"))


@pytest.fixture(scope="session")
def lab():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the browser tests, but there is no Chromium at {CHROMIUM} (set LAB_CHROMIUM)")
        pytest.skip(f"no Chromium at {CHROMIUM} (set LAB_CHROMIUM)")
    running = start_lab_with_dashboard(ROOT / "var" / "browser")
    yield running
    running.stop()
    errors = [line for line in running.log_tail("dashboard", 5000).splitlines() if "Traceback" in line]
    assert not errors, f"the dashboard logged a traceback; see {running.logs['dashboard']}"


@pytest.fixture(scope="session")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A browser tab on the dashboard that remembers every console error and uncaught exception."""

    def __init__(self, context, base_url: str):
        self.base_url = base_url
        self.tab = context.new_page()
        self.errors: list[str] = []
        self.tab.on(
            "console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
        )
        self.tab.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, path: str):
        self.tab.goto(self.base_url + path)
        return self.tab

    def screenshot(self, name: str, *, docs: bool = False, docs_full_page: bool = False) -> None:
        """Always into var/screenshots/; into docs/screenshots/ too when LAB_DOC_SCREENSHOTS=1.

        The docs' copies are committed, so an ordinary test run leaves them alone.
        """
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        if docs and os.environ.get("LAB_DOC_SCREENSHOTS") == "1":
            DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.tab.screenshot(path=str(DOC_SCREENSHOTS / f"{name}.png"), full_page=docs_full_page)


@pytest.fixture
def context(browser):
    # A student's laptop: 1366 px wide (the README's screenshots are taken at this size too).
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def anonymous(context, lab) -> Page:
    return Page(context, lab.urls["dashboard"])


@pytest.fixture
def staff(context, lab) -> Page:
    """A tab logged in as the lab's admin, through the dashboard's login form."""
    page = Page(context, lab.urls["dashboard"])
    tab = page.open("/login/")
    tab.fill("#email", ADMIN[0])
    tab.fill("#password", ADMIN[1])
    tab.click("form button[type=submit]")
    tab.wait_for_url(lab.urls["dashboard"] + "/")
    assert tab.locator(".who").inner_text().startswith(ADMIN[0])
    return page


@pytest.fixture(scope="session")
def admin_api(lab):
    """Direct calls to the services as the admin (to check what the dashboard did, not through it)."""
    response = requests.post(
        f"{lab.urls['user']}/api/auth/login/", json={"email": ADMIN[0], "password": ADMIN[1]}, timeout=10
    )
    assert response.status_code == 200, response.text
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {response.json()['access']}"

    def faults(service: str) -> list[dict]:
        answer = session.get(f"{lab.urls[service]}/_lab/faults/", timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["faults"]

    def clear(service: str) -> None:
        session.delete(f"{lab.urls[service]}/_lab/faults/", timeout=10)

    session.faults = faults
    session.clear = clear
    return session


@pytest.fixture(autouse=True)
def _no_fault_left_behind(request, lab):
    """Each test starts and ends with a healthy lab, whatever it broke."""
    if "admin_api" not in request.fixturenames:
        yield
        return
    api = request.getfixturevalue("admin_api")
    for service in ("user", "order", "inventory", "payment"):
        api.clear(service)
    yield
    for service in ("user", "order", "inventory", "payment"):
        api.clear(service)
