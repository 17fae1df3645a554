"""The browsable API's login: its cookie counts on HTML pages only, with CSRF; the login page talks to user_service."""

import json

import pytest
from django.test import Client

from chassis.browsable import COOKIE
from chassis.testing import service_token, user_token

HTML = "text/html"


def _logged_in(client, **claims) -> Client:
    client.cookies[COOKIE] = user_token(user_id=7, email="alice@lab.local", name="Alice", **claims)
    return client


@pytest.fixture
def browser():
    """A browser: Django's test client with CSRF checks on, as a real one gets them."""
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def user_service(peer, settings):
    """The scripted peer stands for user_service."""
    settings.CHASSIS = {**settings.CHASSIS, "PEERS": {**settings.CHASSIS["PEERS"], "user": peer.url}}
    return peer


def test_the_cookie_is_ignored_on_json_requests(browser):
    """Ensure a JSON request carrying only the login cookie is anonymous (401)."""
    _logged_in(browser)

    assert browser.get("/whoami/", HTTP_ACCEPT="application/json").status_code == 401
    assert browser.get("/whoami/?format=json").status_code == 401


def test_the_cookie_logs_in_an_html_get(browser):
    """Ensure the browsable page of a user endpoint accepts the cookie and shows who is logged in, with a logout."""
    _logged_in(browser)

    response = browser.get("/whoami/", HTTP_ACCEPT=HTML)

    assert response.status_code == 200
    assert response.data == {"id": 7, "email": "alice@lab.local", "staff": False}
    html = response.content.decode()
    assert "Logged in as <strong>Alice</strong> (alice@lab.local)" in html
    assert 'action="/api-auth/logout/?next=%2Fwhoami%2F"' in html


def test_anonymous_html_page_offers_the_login_link(browser):
    """Ensure an anonymous browsable page says the endpoint needs a login and links to it, back to itself."""
    response = browser.get("/whoami/", HTTP_ACCEPT=HTML)

    assert response.status_code == 401
    html = response.content.decode()
    assert 'href="/api-auth/login/?next=%2Fwhoami%2F"' in html
    assert "This endpoint needs a user" in html


def test_an_unsafe_method_with_the_cookie_needs_the_csrf_token(browser):
    """Ensure a POST with the cookie but no CSRF token is a 403, and passes with the page's token."""
    _logged_in(browser)
    page = browser.get("/whoami/", HTTP_ACCEPT=HTML)  # sets the CSRF cookie, as any page does
    token = json.loads(page.content.decode().split('id="drf_csrf">')[1].split("</script>")[0])["csrfToken"]
    body = json.dumps({"name": "x", "quantity": 1})

    refused = browser.post("/echo/", body, content_type="application/json", HTTP_ACCEPT=HTML)
    accepted = browser.post("/echo/", body, content_type="application/json", HTTP_ACCEPT=HTML, HTTP_X_CSRFTOKEN=token)

    assert refused.status_code == 403
    assert "CSRF failed" in refused.content.decode()
    assert accepted.status_code == 201


def test_an_expired_cookie_is_anonymous_and_the_page_says_so(browser):
    """Ensure an expired login is not accepted and the page asks to log in again."""
    _logged_in(browser, ttl=-60)

    response = browser.get("/whoami/", HTTP_ACCEPT=HTML)

    assert response.status_code == 401
    assert "Your login has expired" in response.content.decode()


def test_a_service_token_in_the_cookie_is_refused(browser):
    """Ensure only a user access token works in the cookie, never a service token."""
    browser.cookies[COOKIE] = service_token(caller="order", audience="inventory")

    assert browser.get("/internal/", HTTP_ACCEPT=HTML).status_code == 401
    assert browser.get("/whoami/", HTTP_ACCEPT=HTML).status_code == 401


def test_login_with_a_wrong_password_shows_user_services_message(browser, user_service):
    """Ensure a refused login shows user_service's message on the page and sets no cookie."""
    user_service.script = [(401, {"code": "invalid_credentials", "message": "Wrong email or password."})]
    browser.get("/api-auth/login/")  # the CSRF cookie

    response = browser.post(
        "/api-auth/login/",
        {"email": "alice@lab.local", "password": "nope", "csrfmiddlewaretoken": browser.cookies["csrftoken"].value},
    )

    assert response.status_code == 401
    assert "Wrong email or password." in response.content.decode()
    assert COOKIE not in response.cookies
    [sent] = user_service.received
    assert sent["path"] == "/api/auth/login/"
    assert json.loads(sent["body"]) == {"email": "alice@lab.local", "password": "nope"}


def test_login_sets_an_httponly_cookie_keeps_its_session_and_follows_next(browser, user_service):
    """Ensure a good login keeps only the access token (HttpOnly, SameSite=Lax), does not log out, goes to next.

    A logout would revoke the session, the cookie's access token with it.
    """
    access = user_token(user_id=7, email="alice@lab.local", name="Alice")
    user_service.script = [(200, {"access": access, "refresh": "the-refresh-token"})]
    browser.get("/api-auth/login/")

    response = browser.post(
        "/api-auth/login/?next=/whoami/",
        {"email": "alice@lab.local", "password": "right", "csrfmiddlewaretoken": browser.cookies["csrftoken"].value},
    )

    assert response.status_code == 302 and response["Location"] == "/whoami/"
    cookie = response.cookies[COOKIE]
    assert cookie.value == access and cookie["httponly"] and cookie["samesite"] == "Lax"
    assert [r["path"] for r in user_service.received] == ["/api/auth/login/"]
    assert "the-refresh-token" not in str(response.cookies)
    assert browser.get("/whoami/", HTTP_ACCEPT=HTML).status_code == 200


@pytest.mark.parametrize("target", ["https://evil.example/steal", "//evil.example/", "http://127.0.0.1:9/x"])
def test_login_does_not_follow_an_external_next(browser, user_service, target):
    """Ensure a next pointing to another host is dropped: the login lands on the login page itself."""
    user_service.script = [(200, {"access": user_token(user_id=7), "refresh": "r"}), (204, None)]
    browser.get("/api-auth/login/")

    response = browser.post(
        "/api-auth/login/",
        {
            "email": "alice@lab.local",
            "password": "right",
            "next": target,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"].value,
        },
    )

    assert response.status_code == 302
    assert response["Location"] == "/api-auth/login/"


def test_login_page_without_csrf_token_is_refused(browser, user_service):
    """Ensure the login form itself is CSRF-protected (no login forced on a browser by another site)."""
    response = browser.post("/api-auth/login/", {"email": "alice@lab.local", "password": "right"})

    assert response.status_code == 403
    assert user_service.received == []


def test_user_service_down_is_said_on_the_login_page(browser, settings):
    """Ensure an unreachable user_service gives a 503 page that says so, not a 500."""
    settings.CHASSIS = {
        **settings.CHASSIS,
        "PEERS": {**settings.CHASSIS["PEERS"], "user": "http://127.0.0.1:9"},
        "RETRY_ATTEMPTS": 1,
    }
    browser.get("/api-auth/login/")

    response = browser.post(
        "/api-auth/login/",
        {"email": "alice@lab.local", "password": "x", "csrfmiddlewaretoken": browser.cookies["csrftoken"].value},
    )

    assert response.status_code == 503
    assert "The user service cannot be reached" in response.content.decode()


def test_logout_forgets_the_cookie(browser):
    """Ensure logging out (a POST with CSRF) deletes the cookie and goes back to a local next."""
    _logged_in(browser)
    browser.get("/api-auth/login/")

    response = browser.post(
        "/api-auth/logout/?next=/whoami/", {"csrfmiddlewaretoken": browser.cookies["csrftoken"].value}
    )

    assert response.status_code == 302 and response["Location"] == "/whoami/"
    assert response.cookies[COOKIE].value == "" and response.cookies[COOKIE]["max-age"] == 0
    assert browser.get("/whoami/", HTTP_ACCEPT=HTML).status_code == 401
