"""Request deadlines: carried from hop to hop, and work not started once they have passed.

A client may say until when its answer is still of use, in ``X-Request-Deadline``
(a Unix time in seconds, decimals allowed). The service binds it for the request;
the HTTP client to peers (:mod:`chassis.client`) sends every hop the earlier of
that deadline and its own timeout for the call (so a hop always carries one, the
caller's timeout when nobody set a deadline), caps its read timeout to the time
left, and does not send a call whose deadline has passed.

A request that arrives after its deadline (it waited in a queue while a peer
hung, and its client has given up and perhaps retried) is answered 503 at once,
before any view runs: load shedding. The deadline is an absolute time, not a
duration, so that the time a request spent queued before the service saw it
counts too; the machines of one lab share a clock (one host, or NTP in a cluster).

Work that must finish once begun, such as a saga's compensation, runs inside
:func:`lifted`, where no request deadline applies.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time

from django.http import JsonResponse

from . import metrics, telemetry
from .errors import error_body

HEADER = "X-Request-Deadline"
# The furthest ahead a deadline may be: anything later is a mistake (milliseconds sent as seconds).
MAX_AHEAD_SECONDS = 24 * 3600
_current: contextvars.ContextVar[float | None] = contextvars.ContextVar("request_deadline", default=None)


class BadDeadline(ValueError):
    """The header's value is not a usable deadline."""


def parse(value: str, now: float | None = None) -> float:
    """The deadline a header value names, or :class:`BadDeadline` saying why it is refused."""
    now = time.time() if now is None else now
    try:
        deadline = float(value.strip())
    except ValueError:
        raise BadDeadline(
            f"{HEADER} must be a Unix time in seconds, such as {now + 10:.3f}; got {value[:40]!r}."
        ) from None
    if not math.isfinite(deadline) or deadline <= 0:
        raise BadDeadline(f"{HEADER} must be a finite Unix time in seconds; got {value[:40]!r}.")
    if deadline > now + MAX_AHEAD_SECONDS:
        raise BadDeadline(
            f"{HEADER} is more than {MAX_AHEAD_SECONDS // 3600} hours ahead ({value[:40]!r}); "
            "it is a Unix time in seconds, not milliseconds."
        )
    return deadline


def current() -> float | None:
    """The deadline of the work in hand, or None."""
    return _current.get()


def remaining() -> float | None:
    """Seconds left before the deadline (negative once it has passed), or None without one."""
    deadline = _current.get()
    return None if deadline is None else deadline - time.time()


def expired() -> bool:
    left = remaining()
    return left is not None and left <= 0


def for_hop(timeout: float) -> float:
    """The deadline to send a peer for a call the caller waits ``timeout`` seconds for."""
    own = time.time() + timeout
    deadline = _current.get()
    return own if deadline is None else min(deadline, own)


@contextlib.contextmanager
def bound(deadline: float | None):
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def lifted():
    """Run what must finish once started (undoing a half-done saga) free of the request's deadline."""
    with bound(None):
        yield


def shed_response(late_by: float) -> JsonResponse:
    message = (
        f"The request's deadline ({HEADER}) passed {late_by:.3f} s before this service could start on it; "
        "nothing was done. Whoever sent it has given up waiting: send it again with a new deadline."
    )
    response = JsonResponse(error_body("deadline_exceeded", message), status=503)
    response["Retry-After"] = "1"
    return response


class DeadlineMiddleware:
    """Bind the request's deadline; refuse a malformed one (400) and shed a passed one (503)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raw = request.headers.get(HEADER)
        if raw is None:
            return self.get_response(request)
        try:
            deadline = parse(raw)
        except BadDeadline as exc:
            return JsonResponse(error_body("bad_deadline", str(exc), fields={HEADER: [str(exc)]}), status=400)
        late_by = time.time() - deadline
        if late_by >= 0:
            metrics.SHED.labels("deadline").inc()
            telemetry.event("lab.shed", reason="deadline", late_by_ms=round(late_by * 1000))
            return shed_response(late_by)
        with bound(deadline):
            return self.get_response(request)
