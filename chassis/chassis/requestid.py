"""Request ids: accept or generate ``X-Request-ID``, echo it, log it, forward it.

The id lives in a context variable so that log lines and the HTTP client see
it without it being passed around.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from opentelemetry import trace

HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def get_request_id() -> str:
    """The id of the request being served, or ``"-"`` outside a request."""
    return _current.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def bind_request_id(value: str | None) -> contextvars.Token:
    """Make ``value`` (or a new id when it is missing or malformed) current."""
    if not value or not _VALID.match(value):
        value = new_request_id()
    return _current.set(value)


def clear_request_id(**_kwargs) -> None:
    _current.set("-")


class RequestIdMiddleware:
    """Binds the request id for a request and echoes it back.

    The id stays bound until ``request_finished`` (connected in the app
    config), because Django logs "Not Found" and 500s after the middleware
    chain has returned, and those lines need the id too.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        bind_request_id(request.headers.get(HEADER))
        request.request_id = get_request_id()
        trace.get_current_span().set_attribute("lab.request_id", request.request_id)
        response = self.get_response(request)
        response[HEADER] = request.request_id
        return response


class RequestIdLogFilter(logging.Filter):
    """Adds ``record.request_id`` so every log format can print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = get_request_id()
        return True
