"""The lab's microservice chassis: the mechanism every service shares.

Modules: ``settings`` (12-factor settings), ``requestid`` (X-Request-ID),
``errors`` (one JSON error format), ``health`` (GET /health/), ``keys`` and
``auth`` (EdDSA JWTs for users and services), ``client`` (the HTTP client for
peers), ``pagination``, ``idempotency`` and ``urls`` (routes every service mounts).
No shop logic lives here.
"""
