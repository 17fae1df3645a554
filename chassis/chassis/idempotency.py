"""Idempotent creation: the ``Idempotency-Key`` header, request fingerprints, and create-or-replay.

The pattern every service follows: a record created under a key stores the
key (unique in the database) and the fingerprint of the request. The same key
with the same fingerprint replays the recorded result; with another one it is
a 409 ``idempotency_conflict``. Two concurrent requests with one key cannot
both write: the loser's ``IntegrityError`` turns into a replay of the winner.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from django.db import IntegrityError
from rest_framework.exceptions import ValidationError

from .errors import IdempotencyConflict

T = TypeVar("T")

HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[A-Za-z0-9._:-]{8,128}$"  # also what the OpenAPI schemas say of the header
_VALID = re.compile(KEY_PATTERN)


def idempotency_key_from(request, *, required: bool = True) -> str | None:
    """The request's ``Idempotency-Key``, validated; a 400 when missing (if required) or malformed."""
    value = request.headers.get(HEADER)
    if value is None or value == "":
        if required:
            raise ValidationError(
                {HEADER: ["This header is required: send a unique key (8-128 characters) per operation."]}
            )
        return None
    if not _VALID.match(value):
        raise ValidationError({HEADER: ["Use 8 to 128 characters among letters, digits, '.', '_', ':' and '-'."]})
    return value


def fingerprint(data) -> str:
    """A stable hash of a request body, to tell a true replay from a reused key."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class IdempotentCreate(Generic[T]):
    """One creation under an idempotency key.

    ``lookup`` finds the record already created under the key (or None); the
    record has a ``request_fingerprint`` attribute. A conflict is answered with
    ``conflict_message`` and the body keys ``conflict_extra(record)`` returns.
    """

    def __init__(
        self,
        *,
        lookup: Callable[[], T | None],
        request_fingerprint: str,
        conflict_message: str | None = None,
        conflict_extra: Callable[[T], dict[str, Any]] | None = None,
    ):
        self.lookup = lookup
        self.request_fingerprint = request_fingerprint
        self.conflict_message = conflict_message
        self.conflict_extra = conflict_extra
        self._replayed: T | None = None

    def replay(self) -> T | None:
        """The record created earlier under the key, or None; an :class:`IdempotencyConflict` if its request differs.

        ``create`` may call it again once it holds its locks, and return what it finds.
        """
        existing = self.lookup()
        if existing is None:
            return None
        if existing.request_fingerprint != self.request_fingerprint:
            extra = self.conflict_extra(existing) if self.conflict_extra else {}
            raise IdempotencyConflict(self.conflict_message, **extra)
        self._replayed = existing
        return existing

    def run(self, create: Callable[[], T], *, look_first: bool = True) -> tuple[T, bool]:
        """``(record, replayed)``: the earlier record, or the one ``create`` makes (in its own transaction).

        With ``look_first`` False the lookup is skipped on the way in: ``create`` writes
        first, and a replay is told by the unique key refusing its row (its transaction
        rolled back), one statement less for every first request. Only for a ``create``
        that does nothing outside its transaction before that write: a replay runs it.
        """
        existing = self.replay() if look_first else None
        if existing is not None:
            return existing, True
        try:
            record = create()
        except IntegrityError:
            # A concurrent request with the same key committed first: answer with its record.
            existing = self.replay()
            if existing is None:
                raise
            return existing, True
        return record, self._replayed is not None and record is self._replayed
