"""Who may export spans to the collector, and under which ``service.name``.

Each service's OTLP exporter sends ``Authorization: Bearer <service token>``,
signed with that service's own private key for the audience ``dashboard``
(:class:`chassis.telemetry.ServiceTokenAuth`), and verified here with its public
key exactly like a call between services: ``typ=service``, ``aud=dashboard``, a
lifetime within :data:`chassis.auth.SERVICE_TOKEN_MAX_LIFETIME`. The token's
issuer is the exporter's identity, and its spans are stored only under a
service name that identity owns (:data:`SERVICE_NAMES`): a service cannot fill
the traces the lab is audited by with spans in another service's name.

A missing or bad token is a 401; an export naming a service its token does not
own is a 403, and none of it is stored (a real exporter only ever names its own
service, so a mismatch is a forgery or a misconfiguration, never a partial
success worth keeping).
"""

from __future__ import annotations

import jwt
from django.conf import settings
from rest_framework import exceptions

from chassis import auth as chassis_auth

# The service names each exporting identity may use. The order service's Celery worker
# runs with the order service's key and reports itself as "worker" (order_service/config/celery.py).
SERVICE_NAMES: dict[str, frozenset[str]] = {
    "order": frozenset({"order", "worker"}),
}


class ExporterRefused(Exception):
    """The export is not authenticated (401) or not allowed (403); the message says why."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def exporter_identity(authorization: str) -> str:
    """The identity of a valid collector credential in an ``Authorization`` header; else :class:`ExporterRefused`."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ExporterRefused(
            401,
            "not_authenticated",
            "An OTLP export needs 'Authorization: Bearer <service token>': a token the exporting service signs "
            "with its own key for the audience 'dashboard' (chassis.telemetry does this for every lab service).",
        )
    try:
        claims = chassis_auth.verify(token.strip())
    except jwt.ExpiredSignatureError as exc:
        raise ExporterRefused(401, "invalid_token", "The exporter's token has expired.") from exc
    except (jwt.InvalidTokenError, ValueError) as exc:
        raise ExporterRefused(401, "invalid_token", "The exporter's token is invalid.") from exc
    own = settings.CHASSIS["SERVICE"]
    if claims.get("typ") != "service" or claims.get("aud") != own:
        raise ExporterRefused(401, "invalid_token", f"An export needs a service token for the audience {own!r}.")
    try:
        chassis_auth.check_service_token_lifetime(claims)
    except exceptions.AuthenticationFailed as exc:
        raise ExporterRefused(401, "invalid_token", str(exc.detail)) from exc
    return str(claims["iss"])


def service_names_of(identity: str) -> frozenset[str]:
    """The ``service.name`` values ``identity`` may export spans under."""
    return SERVICE_NAMES.get(identity, frozenset({identity}))


def check_services(identity: str, services: set[str]) -> None:
    """Refuse (403) an export naming any service ``identity`` does not own."""
    foreign = sorted(services - service_names_of(identity))
    if foreign:
        raise ExporterRefused(
            403,
            "forbidden_service",
            f"This exporter is authenticated as {identity!r} and may not export spans of "
            f"{', '.join(repr(s) for s in foreign)}; nothing of this export was stored.",
        )
