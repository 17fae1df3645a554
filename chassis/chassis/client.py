"""The HTTP client every service uses to call its peers.

One :class:`ServiceClient` per destination. It keeps a pooled keep-alive
session per thread, sets connect/read timeouts on every call, forwards the
request id, authenticates with a short-lived service token naming the caller,
and retries with exponential backoff and jitter — only where a retry cannot do
a thing twice: idempotent methods, requests carrying an ``Idempotency-Key``,
and connection failures that happened before anything was sent. It carries the
request's deadline (:mod:`chassis.deadline`) to the peer, never waits past it,
and sends nothing once it has passed.

Around each logical call: a bulkhead (bounded concurrent calls per peer), a
circuit breaker per peer shared by every worker process, and injected
dependency faults — each switchable at run time (``chassis.lab.resilience``).

Answers below 500 are returned to the caller (a 4xx is a business answer, not
a failure); network errors, timeouts and 5xx that survive the retries raise
:class:`PeerUnavailable`.
"""

from __future__ import annotations

import json as jsonlib
import logging
import threading
from dataclasses import dataclass, field

import pybreaker
import requests
from django.conf import settings
from django.core.cache import cache
from requests.adapters import HTTPAdapter
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tenacity.stop import stop_base

from . import auth, deadline, metrics, telemetry
from .lab import faults, resilience
from .requestid import HEADER as REQUEST_ID_HEADER
from .requestid import get_request_id, new_request_id

log = logging.getLogger("chassis.client")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})


class PeerUnavailable(Exception):
    """The peer could not give an answer: unreachable, timed out, or 5xx after retries."""

    def __init__(
        self,
        peer: str,
        reason: str,
        *,
        status: int | None = None,
        attempts: int = 1,
        rejected: bool = False,
        retry_after: float | None = None,
        response: PeerResponse | None = None,
    ):
        self.peer = peer
        self.reason = reason
        self.status = status
        self.attempts = attempts
        self.rejected = rejected  # True when the breaker or bulkhead refused without calling
        self.retry_after = retry_after  # seconds the open breaker still refuses, when it is the reason
        self.response = response  # the peer's own 5xx answer (body, headers), when it gave one
        super().__init__(f"{peer} unavailable after {attempts} attempt(s): {reason}")


@dataclass
class PeerResponse:
    """A peer's answer below 500: status, decoded JSON body (or None), headers."""

    status: int
    data: object
    headers: dict = field(default_factory=dict)
    attempts: int = 1
    stale: bool = False  # served from the fallback cache, the peer being unavailable

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _RetryableFailure(Exception):
    def __init__(self, reason: str, status: int | None = None, response: PeerResponse | None = None):
        self.reason = reason
        self.status = status
        self.response = response
        super().__init__(reason)


_local = threading.local()


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=32, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


def breakers_check(peers) -> None:
    """Fail fast before a chain of calls that all have to succeed (the checkout saga): nothing is sent.

    When the breaker towards any of ``peers`` is open (and the breaker switch on), raise
    :class:`PeerUnavailable` (``rejected``, ``retry_after`` = the seconds it stays open) before
    the first call, counted and traced as a call the breaker refused. A half-open breaker, or
    one whose ``reset_timeout`` has run out, lets the chain start: its call is the trial.
    """
    if not resilience.switches()["breaker"]["enabled"]:
        return
    for peer in peers:
        left = resilience.breaker_open_for(peer)
        if left is not None:
            metrics.PEER_CALLS.labels(peer, "rejected").inc()
            reason = "circuit open: failing fast"
            telemetry.event("lab.breaker_rejected", peer=peer, reason=f"{reason}, before the first call")
            raise PeerUnavailable(peer, reason, rejected=True, attempts=0, retry_after=left)


class ServiceClient:
    """Calls to one peer service, by its short name (``"inventory"``)."""

    def __init__(self, peer: str, *, base_url: str | None = None, policy: dict | None = None):
        """``policy`` fixes this client's resilience settings (same shape as the
        run-time switches, sections merged over the defaults) instead of following
        the lab's switches: the dashboard's own short-timeout, no-retry client."""
        self.peer = peer
        self._base_url = base_url
        self.policy = policy

    @property
    def base_url(self) -> str:
        return self._base_url or settings.CHASSIS["PEERS"][self.peer]

    def get(self, path: str, **kwargs) -> PeerResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> PeerResponse:
        return self.request("POST", path, **kwargs)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: dict | None = None,
        idempotency_key: str | None = None,
        bearer: str | None = None,
        fallback_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> PeerResponse:
        """Send one logical call through bulkhead, breaker and retries; see the module docstring.

        ``fallback_key`` (GET only): remember successful answers under this key
        and, when the peer is unavailable and the fallback switch is on, return
        the remembered one marked ``stale``. ``headers``: more headers to send (the
        client's own — authorization, request id, deadline, key — win over them).
        """
        switches = resilience.switches() if self.policy is None else resilience.merged(self.policy)
        try:
            response = self._guarded(
                method.upper(), path, json, params, idempotency_key, bearer, switches, headers or {}
            )
        except PeerUnavailable as exc:
            if exc.rejected:
                metrics.PEER_CALLS.labels(self.peer, "rejected").inc()
                telemetry.event(
                    "lab.breaker_rejected" if "circuit" in exc.reason else "lab.bulkhead_rejected",
                    peer=self.peer,
                    reason=exc.reason,
                )
            else:
                metrics.PEER_CALLS.labels(self.peer, "unavailable").inc()
            if fallback_key and switches["fallback"]["enabled"]:
                cached = cache.get(f"lab:fallback:{self.peer}:{fallback_key}")
                if cached is not None:
                    metrics.PEER_CALLS.labels(self.peer, "stale").inc()
                    telemetry.event("lab.fallback", peer=self.peer, key=fallback_key)
                    return PeerResponse(status=200, data=cached, stale=True)
            raise
        metrics.PEER_CALLS.labels(self.peer, "ok" if response.status < 400 else "client_error").inc()
        if fallback_key and response.ok:
            cache.set(f"lab:fallback:{self.peer}:{fallback_key}", response.data, timeout=24 * 3600)
        return response

    def _guarded(self, method, path, json, params, idempotency_key, bearer, switches, extra) -> PeerResponse:
        if deadline.expired():
            # Whoever asked for this has given up: the call is not sent (nothing to undo), and
            # the breaker does not hear of it (it says nothing about the peer).
            telemetry.event("lab.deadline_passed", peer=self.peer, path=path)
            raise PeerUnavailable(self.peer, "the request's deadline has passed: not sent", rejected=True, attempts=0)
        bulkhead = None
        if switches["bulkhead"]["enabled"]:
            bulkhead = resilience.bulkhead_for(self.peer, int(switches["bulkhead"]["max_concurrent"]))
            # A short wait for a slot: under ordinary load calls last milliseconds and a burst
            # queues briefly; when the peer hangs, callers beyond the bulkhead give up after it.
            if not bulkhead.acquire(timeout=settings.CHASSIS.get("BULKHEAD_WAIT_SECONDS", 0.5)):
                raise PeerUnavailable(self.peer, "bulkhead full: too many concurrent calls", rejected=True, attempts=0)
        try:
            if not switches["breaker"]["enabled"]:
                return self._send(method, path, json, params, idempotency_key, bearer, switches, extra)
            breaker = resilience.breaker_for(self.peer)
            try:
                with breaker.calling():
                    try:
                        return self._send(method, path, json, params, idempotency_key, bearer, switches, extra)
                    except PeerUnavailable as exc:
                        raise resilience.PeerDown(exc) from exc
            except resilience.PeerDown as down:
                raise down.error from None
            except pybreaker.CircuitBreakerError as exc:
                raise PeerUnavailable(self.peer, "circuit open: failing fast", rejected=True, attempts=0) from exc
        finally:
            if bulkhead is not None:
                bulkhead.release()

    def _send(self, method, path, json, params, idempotency_key, bearer, switches, extra) -> PeerResponse:
        retry_safe = method in SAFE_METHODS or bool(idempotency_key)
        request_id = get_request_id()
        headers = {
            **extra,
            REQUEST_ID_HEADER: request_id if request_id != "-" else new_request_id(),
            "Authorization": f"Bearer {bearer or auth.service_token(self.peer)}",
            "Accept": "application/json",
        }
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        url = f"{self.base_url}{path}"
        if switches["timeouts"]["enabled"]:
            timeout = (switches["timeouts"]["connect"], switches["timeouts"]["read"])
        else:
            timeout = (resilience.OFF_READ_TIMEOUT, resilience.OFF_READ_TIMEOUT)
        attempts = 0

        def attempt() -> PeerResponse:
            nonlocal attempts
            left = deadline.remaining()
            if left is not None:
                left = max(left, 0.05)  # it passed between the check in _guarded and now
            attempts += 1
            if attempts > 1:
                metrics.RETRIES.labels(self.peer).inc()
                telemetry.event("lab.retry", peer=self.peer, attempt=attempts, path=path)
            # Never wait past the request's deadline; tell the peer until when the answer is of use.
            this_timeout = timeout if left is None else (min(timeout[0], left), min(timeout[1], left))
            headers[deadline.HEADER] = f"{deadline.for_hop(this_timeout[0] + this_timeout[1]):.3f}"
            try:
                _apply_dependency_fault(self.peer, this_timeout[1])
                response = _session().request(
                    method, url, json=json, params=params, headers=headers, timeout=this_timeout
                )
            except requests.ConnectionError as exc:
                # A refused or failed connection sent nothing (ConnectTimeout is one too);
                # a read timeout or a dropped answer may have been acted on.
                never_sent = isinstance(exc, requests.ConnectTimeout) or _connect_refused(exc)
                if retry_safe or never_sent:
                    raise _RetryableFailure(f"connection failed: {type(exc).__name__}") from exc
                raise PeerUnavailable(self.peer, f"connection lost: {type(exc).__name__}", attempts=attempts) from exc
            except requests.Timeout as exc:
                if retry_safe:
                    raise _RetryableFailure("read timed out") from exc
                raise PeerUnavailable(self.peer, "read timed out", attempts=attempts) from exc
            answer = PeerResponse(
                status=response.status_code, data=_decode(response), headers=dict(response.headers), attempts=attempts
            )
            if response.status_code >= 500:
                reason = f"HTTP {response.status_code}"
                if retry_safe and response.status_code in RETRY_STATUSES:
                    raise _RetryableFailure(reason, response.status_code, answer)
                raise PeerUnavailable(
                    self.peer, reason, status=response.status_code, attempts=attempts, response=answer
                )
            return answer

        retries = switches["retries"]
        retrying = Retrying(
            stop=stop_after_attempt(max(1, int(retries["attempts"])) if retries["enabled"] else 1) | _StopAtDeadline(),
            wait=wait_exponential_jitter(multiplier=retries["backoff"], max=2.0, jitter=retries["backoff"]),
            retry=retry_if_exception(lambda exc: isinstance(exc, _RetryableFailure)),
            reraise=False,
        )
        try:
            return retrying(attempt)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            log.warning("%s %s%s failed after %d attempts: %s", method, self.peer, path, attempts, last)
            raise PeerUnavailable(
                self.peer, last.reason, status=last.status, attempts=attempts, response=last.response
            ) from last


class _StopAtDeadline(stop_base):
    """No retry once the request's deadline has passed: nobody waits for its answer any more."""

    def __call__(self, retry_state) -> bool:
        return deadline.expired()


def _apply_dependency_fault(peer: str, read_timeout: float) -> None:
    """Make this attempt suffer the injected dependency fault on ``peer``, if one bites."""
    fault = faults.dependency_fault(peer)
    if fault is None:
        return
    faults.record_hit(fault)
    if fault["mode"] == "delay":
        faults.sleep(faults.delay_seconds(fault))
    elif fault["mode"] == "fail":
        raise requests.ConnectionError(f"NewConnectionError: injected fault {fault['id']}: connection refused")
    else:  # hang: nothing comes back until the caller gives up
        faults.sleep(read_timeout)
        raise requests.ReadTimeout(f"injected fault {fault['id']}: no answer")


def _connect_refused(exc: requests.ConnectionError) -> bool:
    text = repr(exc)
    return "NewConnectionError" in text or "Connection refused" in text


def _decode(response: requests.Response):
    if not response.content:
        return None
    try:
        return response.json()
    except (ValueError, jsonlib.JSONDecodeError):
        return {"raw": response.text[:500]}
