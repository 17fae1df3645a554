"""The HTTP client every service uses to call its peers.

One :class:`ServiceClient` per destination. It keeps a pooled keep-alive
session per thread, sets connect/read timeouts on every call, forwards the
request id, authenticates with a short-lived service token naming the caller,
and retries with exponential backoff and jitter — only where a retry cannot do
a thing twice: idempotent methods, requests carrying an ``Idempotency-Key``,
and connection failures that happened before anything was sent.

Answers below 500 are returned to the caller (a 4xx is a business answer, not
a failure); network errors, timeouts and 5xx that survive the retries raise
:class:`PeerUnavailable`.
"""

from __future__ import annotations

import json as jsonlib
import logging
import threading
from dataclasses import dataclass, field

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from . import auth
from .requestid import HEADER as REQUEST_ID_HEADER
from .requestid import get_request_id, new_request_id

log = logging.getLogger("chassis.client")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})


class PeerUnavailable(Exception):
    """The peer could not give an answer: unreachable, timed out, or 5xx after retries."""

    def __init__(self, peer: str, reason: str, *, status: int | None = None, attempts: int = 1):
        self.peer = peer
        self.reason = reason
        self.status = status
        self.attempts = attempts
        super().__init__(f"{peer} unavailable after {attempts} attempt(s): {reason}")


@dataclass
class PeerResponse:
    """A peer's answer below 500: status, decoded JSON body (or None), headers."""

    status: int
    data: object
    headers: dict = field(default_factory=dict)
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _RetryableFailure(Exception):
    def __init__(self, reason: str, status: int | None = None):
        self.reason = reason
        self.status = status
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


class ServiceClient:
    """Calls to one peer service, by its short name (``"inventory"``)."""

    def __init__(self, peer: str, *, base_url: str | None = None):
        self.peer = peer
        self._base_url = base_url

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
    ) -> PeerResponse:
        """Send one logical call, retried where safe; see the module docstring."""
        conf = settings.CHASSIS
        method = method.upper()
        retry_safe = method in SAFE_METHODS or bool(idempotency_key)
        request_id = get_request_id()
        headers = {
            REQUEST_ID_HEADER: request_id if request_id != "-" else new_request_id(),
            "Authorization": f"Bearer {bearer or auth.service_token(self.peer)}",
            "Accept": "application/json",
        }
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        url = f"{self.base_url}{path}"
        timeout = (conf["CONNECT_TIMEOUT"], conf["READ_TIMEOUT"])
        attempts = 0

        def attempt() -> PeerResponse:
            nonlocal attempts
            attempts += 1
            try:
                response = _session().request(method, url, json=json, params=params, headers=headers, timeout=timeout)
            except requests.ConnectionError as exc:
                # A refused or failed connection sent nothing (ConnectTimeout is one too);
                # a read timeout or a dropped answer may have been acted on.
                never_sent = isinstance(exc, requests.ConnectTimeout) or _connect_refused(exc)
                raise _RetryableFailure(f"connection failed: {type(exc).__name__}") if (
                    retry_safe or never_sent
                ) else PeerUnavailable(self.peer, f"connection lost: {type(exc).__name__}", attempts=attempts)
            except requests.Timeout as exc:
                if retry_safe:
                    raise _RetryableFailure("read timed out") from exc
                raise PeerUnavailable(self.peer, "read timed out", attempts=attempts) from exc
            if response.status_code >= 500:
                reason = f"HTTP {response.status_code}"
                if retry_safe and response.status_code in RETRY_STATUSES:
                    raise _RetryableFailure(reason, response.status_code)
                raise PeerUnavailable(self.peer, reason, status=response.status_code, attempts=attempts)
            return PeerResponse(
                status=response.status_code, data=_decode(response), headers=dict(response.headers), attempts=attempts
            )

        retrying = Retrying(
            stop=stop_after_attempt(max(1, conf["RETRY_ATTEMPTS"])),
            wait=wait_exponential_jitter(multiplier=conf["RETRY_BACKOFF"], max=2.0, jitter=conf["RETRY_BACKOFF"]),
            retry=retry_if_exception(lambda exc: isinstance(exc, _RetryableFailure)),
            reraise=False,
        )
        try:
            return retrying(attempt)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            log.warning("%s %s%s failed after %d attempts: %s", method, self.peer, path, attempts, last)
            raise PeerUnavailable(self.peer, last.reason, status=last.status, attempts=attempts) from last


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
