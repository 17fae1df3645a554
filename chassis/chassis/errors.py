"""One JSON error format for every service, and no tracebacks for clients.

Every error body is::

    {"code": "invalid", "message": "One sentence.", "fields": {...}, "request_id": "..."}

``fields`` is present only for validation errors and mirrors the input's
shape. A database that cannot be reached gives 503 ``database_unavailable``.

Services say a business refusal without HTTP: they raise one of the
application errors below (:class:`NotFound`, :class:`Conflict`...), each with
its code, message, optional ``fields`` and extra body keys. Which HTTP status
each kind of error gets is decided here, in :data:`HTTP_STATUS`, and nowhere else.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DatabaseError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .requestid import get_request_id

log = logging.getLogger("chassis.errors")


class ApplicationError(Exception):
    """A refusal by the application: a machine ``code``, a one-sentence ``message``, the input ``fields``
    at fault (if any) and ``extra`` keys for the error body. It knows nothing of HTTP; the exception
    handler gives each kind its status (:data:`HTTP_STATUS`)."""

    default_code = "refused"
    default_message = "The request was refused."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        fields: dict | None = None,
        headers: dict | None = None,
        **extra,
    ):
        self.code = code or self.default_code
        self.message = message or self.default_message
        self.fields = fields
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.message)


class InvalidRequest(ApplicationError):
    """The request cannot be done as asked (a taken sku, a limit reached); the client must change it."""

    default_code = "invalid"
    default_message = "Invalid input."


class Forbidden(ApplicationError):
    """The caller is known but may not do this to what it names."""

    default_code = "permission_denied"
    default_message = "You do not have permission to do this."


class NotFound(ApplicationError):
    """The thing named does not exist (or is not the caller's)."""

    default_code = "not_found"
    default_message = "Not found."


class PaymentDeclined(ApplicationError):
    """The payment was refused; ``code`` says why (card_declined, insufficient_funds)."""

    default_code = "card_declined"
    default_message = "The card was declined."


class Conflict(ApplicationError):
    """The request clashes with the current state of what it names (not enough stock, not a draft...)."""

    default_code = "conflict"
    default_message = "The request conflicts with the current state."


class IdempotencyConflict(Conflict):
    """An idempotency key sent again with a different request."""

    default_code = "idempotency_conflict"
    default_message = "This Idempotency-Key was already used with a different request body."


class Unavailable(ApplicationError):
    """Something the request needs (a peer service, busy rows) is unavailable for now; try again."""

    default_code = "unavailable"
    default_message = "The service is unavailable; try again shortly."


# The one place that turns an application error into an HTTP status (the most specific class wins).
HTTP_STATUS: dict[type[ApplicationError], int] = {
    ApplicationError: status.HTTP_400_BAD_REQUEST,
    InvalidRequest: status.HTTP_400_BAD_REQUEST,
    PaymentDeclined: status.HTTP_402_PAYMENT_REQUIRED,
    Forbidden: status.HTTP_403_FORBIDDEN,
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def http_status_of(exc: ApplicationError) -> int:
    return next(HTTP_STATUS[cls] for cls in type(exc).__mro__ if cls in HTTP_STATUS)


class ErrorOutput(serializers.Serializer):
    """The error body, for the OpenAPI schema: every service documents its errors with it."""

    code = serializers.CharField(help_text="Machine-readable, e.g. invalid, not_found, insufficient_stock.")
    message = serializers.CharField(help_text="One sentence for a person.")
    fields = serializers.DictField(required=False, help_text="Per-field messages, shaped like the input.")
    request_id = serializers.CharField()


def error_body(code: str, message: str, fields=None, **extra) -> dict:
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    body.update(extra)
    body["request_id"] = get_request_id()
    return body


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _first_message(value)
            if inner:
                return inner if key == "non_field_errors" else f"{key}: {inner}"
    elif isinstance(detail, list):
        for item in detail:
            inner = _first_message(item)
            if inner:
                return inner
    elif detail:
        return str(detail)
    return ""


def exception_handler(exc, context):
    """DRF exception handler producing the lab's error body."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, ApplicationError):
        body = error_body(exc.code, exc.message, exc.fields, **exc.extra)
        return Response(body, status=http_status_of(exc), headers=exc.headers or None)
    if isinstance(exc, DatabaseError):
        log.warning("database error answered as 503: %s", exc)
        return Response(
            error_body("database_unavailable", "The service's database is unavailable; try again shortly."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        first = _first_message(detail)
        response.data = error_body("invalid", f"Invalid input. {first}".strip(), detail)
    else:
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        if not isinstance(code, str):
            code = "error"
        response.data = error_body(code, _first_message(getattr(exc, "detail", "")) or str(exc))
    return response


class DatabaseUnavailableMiddleware:
    """Turns a database error raised outside DRF (health, plain views) into a 503."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, DatabaseError):
            log.warning("database error answered as 503: %s", exception)
            return JsonResponse(
                error_body("database_unavailable", "The service's database is unavailable; try again shortly."),
                status=503,
            )
        return None


def not_found(request, exception=None):
    message = f"No route for {request.path}."
    if not request.path.endswith("/"):
        from django.urls import Resolver404, resolve

        try:
            resolve(request.path + "/")
            message += f" Did you mean {request.path}/ (with the trailing slash)?"
        except Resolver404:
            pass
    return JsonResponse(error_body("not_found", message), status=404)


def server_error(request):
    return JsonResponse(error_body("server_error", "Unexpected server error; it has been logged."), status=500)


def bad_request(request, exception=None):
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


def permission_denied(request, exception=None):
    return JsonResponse(error_body("permission_denied", "You do not have permission to do this."), status=403)
