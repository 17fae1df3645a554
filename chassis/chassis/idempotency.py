"""Reading and checking the ``Idempotency-Key`` header and request fingerprints."""

from __future__ import annotations

import hashlib
import json
import re

from rest_framework.exceptions import ValidationError

HEADER = "Idempotency-Key"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def idempotency_key_from(request, *, required: bool = True) -> str | None:
    """The request's ``Idempotency-Key``, validated; a 400 when missing (if required) or malformed."""
    value = request.headers.get(HEADER)
    if value is None or value == "":
        if required:
            raise ValidationError({HEADER: ["This header is required: send a unique key (8-128 characters) per operation."]})
        return None
    if not _VALID.match(value):
        raise ValidationError({HEADER: ["Use 8 to 128 characters among letters, digits, '.', '_', ':' and '-'."]})
    return value


def fingerprint(data) -> str:
    """A stable hash of a request body, to tell a true replay from a reused key."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
