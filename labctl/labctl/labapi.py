"""Calls to the services as the lab admin, from the terminal.

labctl signs short-lived service tokens as the dashboard, the lab admin's
console, with the dashboard's own key (``var/keys/dashboard/dashboard.private.pem``,
:attr:`Paths.admin_keys`): the services' ``/_lab/`` and reconciliation endpoints
accept that identity. That key is the operator's: it is in the dashboard's keys
dir only, which no service is given (each has its own dir under ``var/keys/``;
docker-compose and Kubernetes mount it only into the dashboard and Locust), so
a service cannot sign as the lab admin. labctl opens no other private key.
"""

from __future__ import annotations

import time
import uuid

import jwt
import requests

from chassis import keys

from .config import SERVICE_BY_NAME, Paths

IDENTITY = "dashboard"


class LabApiError(Exception):
    """A service refused or could not be reached; the message says which and why."""


class LabApi:
    def __init__(self, paths: Paths, *, urls: dict[str, str] | None = None, timeout: float = 5.0):
        self.paths = paths
        self.urls = urls or {name: service.url for name, service in SERVICE_BY_NAME.items()}
        self.timeout = timeout
        self.session = requests.Session()

    def token(self, audience: str) -> str:
        key = keys.load_private_key(str(self.paths.admin_keys), IDENTITY)
        now = int(time.time())
        claims = {
            "iss": IDENTITY,
            "sub": IDENTITY,
            "typ": "service",
            "aud": audience,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, key, algorithm="EdDSA")

    def call(self, method: str, service: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token(service)}", **kwargs.pop("headers", {})}
        try:
            return self.session.request(
                method, f"{self.urls[service]}{path}", headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise LabApiError(f"{service} is unreachable at {self.urls[service]}: {type(exc).__name__}") from exc

    def json(self, method: str, service: str, path: str, **kwargs):
        response = self.call(method, service, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:200]}
        if response.status_code >= 400:
            message = body.get("message") if isinstance(body, dict) else str(body)
            fields = body.get("fields") if isinstance(body, dict) else None
            raise LabApiError(
                f"{service} answered {response.status_code}: {message}" + (f" {fields}" if fields else "")
            )
        return body

    def all_pages(self, service: str, path: str) -> list[dict]:
        """Every row of a paginated endpoint (bounded at 200 pages)."""
        rows, page = [], 1
        while page <= 200:
            body = self.json("GET", service, path, params={"page": page, "page_size": 1000})
            rows.extend(body["results"])
            if not body.get("next"):
                return rows
            page += 1
        raise LabApiError(f"{service}{path}: more than 200 pages; the audit stops here")
