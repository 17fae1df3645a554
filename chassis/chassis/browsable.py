"""Logging in on a service's browsable API: a login page, a cookie, and the renderer that shows them.

The services share no database, so Django's session login would need user
rows in each of them. Instead every service serves the same small login page
(``/api-auth/login/``, DRF's usual place): it posts the email and password to
user_service's ``POST /api/auth/login/`` from the server, through the chassis
client, and keeps the 15-minute access token in an HttpOnly, SameSite=Lax
cookie. The refresh token is revoked at once: nothing longer-lived than the
access token is left in the browser.

The cookie is **not** an API credential. :class:`BrowsableCookieAuthentication`
accepts it only when the request negotiated the browsable API's HTML renderer,
and for unsafe methods only with a valid Django CSRF token (the browsable
forms send one). A JSON call carrying only the cookie is anonymous, so a page
on another site can never spend it. JSON clients keep using
``Authorization: Bearer``.

Cookies belong to a host, not to a port: on one machine the cookie set by
127.0.0.1:8002 also reaches 127.0.0.1:8001, 8003 and 8004, so one login serves
the four services (and one logout ends it everywhere). Each service still has
its own login and logout links, so the same works when the services live on
different hosts (containers, Kubernetes).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from urllib.parse import urlencode

import jwt
from django import forms
from django.conf import settings
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, renderers, serializers
from rest_framework.request import override_method

from . import auth

# chassis.client and chassis.idempotency are imported where they are used: DRF imports this
# module (its settings name it) while chassis.errors, which they need, is still being imported.

log = logging.getLogger("chassis.browsable")

COOKIE = "lab_browsable_token"
FORM_KEY_FIELD = "idempotency_key"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _flag(request, name: str, value) -> None:
    """Remember something about the login cookie on the Django request, for the page to explain."""
    setattr(getattr(request, "_request", request), name, value)


def _wants_browsable_page(request) -> bool:
    return isinstance(getattr(request, "accepted_renderer", None), renderers.BrowsableAPIRenderer)


def user_from_token(token: str) -> tuple[auth.LabUser, dict]:
    """The user of a user_service access token and its claims; ``jwt.InvalidTokenError`` for anything else.

    A service token (or any other kind) is refused: the cookie only ever holds a user's access token.
    """
    claims = auth.verify(token)
    if claims.get("typ") != "access" or claims.get("iss") != "user":
        raise jwt.InvalidTokenError("not a user access token")
    try:
        return auth.LabJWTAuthentication().principal_from(claims), claims
    except exceptions.AuthenticationFailed as exc:
        raise jwt.InvalidTokenError("unusable user access token") from exc


class BrowsableCookieAuthentication(authentication.BaseAuthentication):
    """The browsable-login cookie → ``LabUser``, on HTML pages of the browsable API only.

    * Ignored (anonymous) unless the request negotiated the browsable API renderer:
      a JSON request with only the cookie is not authenticated.
    * An unsafe method (POST, PUT, PATCH, DELETE) also needs a valid CSRF token,
      checked by Django's own CSRF machinery; without it, a 403.
    * An expired or invalid token is anonymous, and the page says "log in again".
    * Only a user access token is accepted (never a service token).
    """

    def authenticate(self, request):
        token = request.COOKIES.get(COOKIE)
        if not token or not _wants_browsable_page(request):
            return None
        try:
            user, claims = user_from_token(token)
        except jwt.ExpiredSignatureError:
            _flag(request, "browsable_session_expired", True)
            return None
        except jwt.InvalidTokenError:
            _flag(request, "browsable_session_invalid", True)
            return None
        if request.method not in _SAFE_METHODS:
            self.enforce_csrf(request)
        return user, claims

    def enforce_csrf(self, request) -> None:
        """A 403 unless the request carries the CSRF token of this browser (as DRF's SessionAuthentication)."""

        def no_response(_request):  # pragma: no cover — never called
            return None

        check = authentication.CSRFCheck(no_response)
        check.process_request(request)  # reads the CSRF cookie into request.META
        reason = check.process_view(request, None, (), {})
        if reason:
            raise exceptions.PermissionDenied(f"CSRF failed: {reason}. Reload the page and submit its form again.")


def authenticated_by_cookie(request) -> bool:
    """True when this DRF request was authenticated by the browsable-login cookie."""
    return isinstance(getattr(request, "successful_authenticator", None), BrowsableCookieAuthentication)


def idempotency_key_from(request, *, required: bool = True) -> str | None:
    """The ``Idempotency-Key`` header; on a browsable page logged in by cookie, else the body's ``idempotency_key``.

    An HTML form cannot send a header, so a view with ``browsable_idempotency_key``
    takes the key from the form body instead, but only from a request the login
    cookie authenticated (an HTML page with its CSRF token): a JSON client still
    has to send the header, and gets :func:`chassis.idempotency.idempotency_key_from`'s 400.
    """
    from . import idempotency
    from .idempotency import _VALID as valid_key  # the header's own rule

    if request.headers.get(idempotency.HEADER) or not authenticated_by_cookie(request):
        return idempotency.idempotency_key_from(request, required=required)
    data = request.data
    value = data.get(FORM_KEY_FIELD) if hasattr(data, "get") else None
    if value is None or value == "":
        if required:
            raise serializers.ValidationError(
                {
                    FORM_KEY_FIELD: [
                        "Send a unique key (8-128 characters) per operation in this field "
                        "(the form generates one on each page load), or an Idempotency-Key header."
                    ]
                }
            )
        return None
    if not isinstance(value, str) or not valid_key.match(value):
        raise serializers.ValidationError(
            {FORM_KEY_FIELD: ["Use 8 to 128 characters among letters, digits, '.', '_', ':' and '-'."]}
        )
    return value


# --------------------------------------------------------------------------- the login page


class LoginForm(forms.Form):
    email = forms.EmailField(max_length=254)
    password = forms.CharField(max_length=128, widget=forms.PasswordInput)


class LoginRefused(Exception):
    def __init__(self, message: str, status: int):
        self.message = message
        self.status = status
        super().__init__(message)


def _message_of(data, default: str) -> str:
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"]
    return default


def _obtain_access_token(*, email: str, password: str) -> tuple[str, dict]:
    """Log in at user_service; return the access token and its verified claims, or raise :class:`LoginRefused`."""
    from .client import PeerUnavailable, ServiceClient

    client = ServiceClient("user")
    try:
        answer = client.post("/api/auth/login/", json={"email": email, "password": password})
    except PeerUnavailable as exc:
        raise LoginRefused(
            f"The user service cannot be reached ({exc.reason}), so nobody can log in right now. "
            "Tokens already issued keep working.",
            503,
        ) from exc
    if answer.status == 401:
        raise LoginRefused(_message_of(answer.data, "Wrong email or password."), 401)
    if answer.status == 429:
        wait = next((value for name, value in answer.headers.items() if name.lower() == "retry-after"), None)
        suffix = f" Try again in {wait} s." if wait else ""
        raise LoginRefused(_message_of(answer.data, "Too many login attempts.") + suffix, 429)
    if not answer.ok or not isinstance(answer.data, dict) or not isinstance(answer.data.get("access"), str):
        raise LoginRefused(_message_of(answer.data, f"The user service answered HTTP {answer.status}."), 400)
    token = answer.data["access"]
    try:
        claims = auth.verify(token)
    except jwt.InvalidTokenError as exc:
        # This service does not trust user_service's key (keys regenerated without a restart?).
        raise LoginRefused(f"The token user_service issued does not verify here: {exc}.", 503) from exc
    # The browser keeps only the short-lived access token; the refresh token is dropped here, never
    # sent on. It is not logged out: a logout now revokes its whole session (``sid``), the access
    # token in the cookie included. Unheld, it expires in user_service's table like any other.
    return token, claims


def _safe_next(request) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return ""


def _current_user(request) -> tuple[auth.LabUser | None, dict | None, bool]:
    """The user of the login cookie, its claims, and whether an expired one was found."""
    token = request.COOKIES.get(COOKIE)
    if not token:
        return None, None, False
    try:
        user, claims = user_from_token(token)
    except jwt.ExpiredSignatureError:
        return None, None, True
    except jwt.InvalidTokenError:
        return None, None, False
    return user, claims, False


def _expires_at(claims: dict | None) -> str:
    if not claims or "exp" not in claims:
        return ""
    return datetime.fromtimestamp(int(claims["exp"]), tz=UTC).strftime("%H:%M:%S UTC")


# Where a logged-in student goes next on each service (its own pages; the others' are on their own ports).
BROWSABLE_PAGES: dict[str, list[tuple[str, str]]] = {
    "user": [("Your profile", "/api/users/me/"), ("Your addresses", "/api/users/me/addresses/")],
    "order": [("Your orders (and placing one)", "/api/orders/")],
    "inventory": [("Products", "/api/products/")],
    "payment": [("Your payments", "/api/payments/"), ("Your cards", "/api/payment-methods/")],
}


def _service_title() -> str:
    return settings.SPECTACULAR_SETTINGS.get("TITLE") or settings.SERVICE_NAME


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def login_view(request):
    """The browsable API's login page: email and password → the login cookie, then back to ``next``."""
    next_url = _safe_next(request)
    form = LoginForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                token, _claims = _obtain_access_token(**form.cleaned_data)
            except LoginRefused as refused:
                form.add_error(None, refused.message)
                status = refused.status
            else:
                log.info("browsable API login of %s", form.cleaned_data["email"])
                response = redirect(next_url or reverse("rest_framework:login"))
                response.set_cookie(COOKIE, token, httponly=True, samesite="Lax", secure=request.is_secure(), path="/")
                return response
        else:
            status = 400
    user, claims, expired = _current_user(request)
    context = {
        "form": form,
        "next": next_url,
        "service_title": _service_title(),
        "current_user": user,
        "expires_at": _expires_at(claims),
        "session_expired": expired,
        "token_ttl_minutes": 15,
        "pages": BROWSABLE_PAGES.get(settings.SERVICE_NAME, []),
    }
    return render(request, "chassis/browsable/login.html", context, status=status)


@never_cache
@csrf_protect
@require_POST
def logout_view(request):
    """Forget the login cookie and go back to ``next`` (or the login page)."""
    response = redirect(_safe_next(request) or reverse("rest_framework:login"))
    response.delete_cookie(COOKIE, path="/", samesite="Lax")
    return response


# --------------------------------------------------------------------------- the browsable API's pages


def _has_nested_list(serializer) -> bool:
    return any(isinstance(field, serializers.ListSerializer) for field in getattr(serializer, "fields", {}).values())


class LabBrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    """DRF's browsable API with the lab's login links, session notices and generated idempotency keys.

    A view with ``browsable_idempotency_key = True`` gets a fresh ``idempotency_key``
    (a uuid4) at the top of its raw-data POST form on every page load, shown in a
    note above the form too; a view may set ``browsable_example`` (a dict) to
    pre-fill the rest of that form. The HTML-form tab is left out where DRF cannot
    draw it (nested lists).
    """

    template = "chassis/browsable/api.html"

    def get_rendered_html_form(self, data, view, method, request):
        if method in ("POST", "PUT", "PATCH") and hasattr(view, "get_serializer"):
            # The serializer of the form's method, not of the request's (as DRF itself does).
            with override_method(view, request, method):
                try:
                    serializer = view.get_serializer()
                except Exception:  # noqa: BLE001 — DRF itself draws no form then
                    serializer = None
            if serializer is not None and _has_nested_list(serializer):
                return None
        return super().get_rendered_html_form(data, view, method, request)

    def get_raw_data_form(self, data, view, method, request):
        form = super().get_raw_data_form(data, view, method, request)
        if form is None or method != "POST" or not getattr(view, "browsable_idempotency_key", False):
            return form
        example = getattr(view, "browsable_example", None)
        if example is None:
            with override_method(view, request, method):
                example = dict(view.get_serializer().data)
        key = str(uuid.uuid4())
        _flag(request, "browsable_generated_key", key)
        content = {FORM_KEY_FIELD: key, **example}
        rendered = renderers.JSONRenderer().render(content, "application/json", {"indent": 4})
        form.fields["_content"].initial = rendered.decode()
        return form

    def get_context(self, data, accepted_media_type, renderer_context):
        context = super().get_context(data, accepted_media_type, renderer_context)
        request = renderer_context["request"]
        django_request = getattr(request, "_request", request)
        by_cookie = authenticated_by_cookie(request)
        back = urlencode({"next": request.get_full_path()})
        context.update(
            {
                "service_title": _service_title(),
                "login_url": f"{reverse('rest_framework:login')}?{back}",
                "logout_url": f"{reverse('rest_framework:logout')}?{back}",
                "cookie_login": by_cookie,
                "session_expired": getattr(django_request, "browsable_session_expired", False),
                "session_invalid": getattr(django_request, "browsable_session_invalid", False),
                "session_expires_at": _expires_at(request.auth) if by_cookie else "",
                "idempotency_key_field": FORM_KEY_FIELD,
                # Set by get_raw_data_form, which super().get_context() has called.
                "generated_idempotency_key": getattr(django_request, "browsable_generated_key", ""),
            }
        )
        return context


class BrowsableCookieScheme(OpenApiAuthenticationExtension):
    """Keeps the login cookie out of the OpenAPI schema: it is no API credential (Bearer is)."""

    target_class = "chassis.browsable.BrowsableCookieAuthentication"
    name: list[str] = []

    def get_security_requirement(self, auto_schema):
        return None

    def get_security_definition(self, auto_schema):
        return []
