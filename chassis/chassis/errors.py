"""One JSON error format for every service, and no tracebacks for clients.

Every error body is::

    {"code": "invalid", "message": "One sentence.", "fields": {...}, "request_id": "..."}

``fields`` is present only for validation errors and mirrors the input's
shape. A database that cannot be reached gives 503 ``database_unavailable``.
Services raise :class:`ServiceError` for business refusals (409, 402...).
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DatabaseError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .requestid import get_request_id

log = logging.getLogger("chassis.errors")


class ServiceError(exceptions.APIException):
    """A refusal with its own status, machine code and message."""

    def __init__(self, *, status_code: int, code: str, message: str, fields: dict | None = None, extra=None):
        self.status_code = status_code
        self.code = code
        self.message = message
        self.fields = fields
        self.extra = extra or {}
        super().__init__(detail=message, code=code)


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
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message, exc.fields, **exc.extra), status=exc.status_code)
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
