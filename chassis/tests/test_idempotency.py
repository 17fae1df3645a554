from types import SimpleNamespace

import pytest
from django.db import IntegrityError
from rest_framework.exceptions import ValidationError
from rest_framework.test import APIRequestFactory

from chassis.errors import IdempotencyConflict
from chassis.idempotency import IdempotentCreate, fingerprint, idempotency_key_from


def _request(key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return APIRequestFactory().post("/", **headers)


def test_key_is_read_and_checked():
    """Ensure a valid key is returned, a missing one is a 400 only when required, a malformed one a 400."""
    assert idempotency_key_from(_request("order-1-charge")) == "order-1-charge"
    assert idempotency_key_from(_request(), required=False) is None
    with pytest.raises(ValidationError):
        idempotency_key_from(_request())
    with pytest.raises(ValidationError):
        idempotency_key_from(_request("short"))


def test_fingerprint_ignores_key_order():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


class Store:
    """A table with one unique key, as a dict."""

    def __init__(self):
        self.rows = {}

    def once(self, key, body, **options):
        return IdempotentCreate(lookup=lambda: self.rows.get(key), request_fingerprint=fingerprint(body), **options)

    def create(self, key, body):
        def create():
            if key in self.rows:
                raise IntegrityError("duplicate key")
            self.rows[key] = SimpleNamespace(pk=len(self.rows) + 1, request_fingerprint=fingerprint(body))
            return self.rows[key]

        return create


def test_first_request_creates_and_same_request_replays():
    store = Store()
    first, replayed = store.once("k", {"x": 1}).run(store.create("k", {"x": 1}))
    assert not replayed
    again, replayed = store.once("k", {"x": 1}).run(store.create("k", {"x": 1}))
    assert replayed and again is first


def test_other_request_under_the_same_key_is_a_conflict_with_its_extra_keys():
    store = Store()
    store.once("k", {"x": 1}).run(store.create("k", {"x": 1}))
    once = store.once("k", {"x": 2}, conflict_message="Used for another thing.", conflict_extra=lambda r: {"id": r.pk})
    with pytest.raises(IdempotencyConflict) as refused:
        once.run(store.create("k", {"x": 2}))
    assert (refused.value.code, refused.value.message, refused.value.extra) == (
        "idempotency_conflict",
        "Used for another thing.",
        {"id": 1},
    )


def test_losing_a_race_replays_the_winner():
    """Ensure an IntegrityError from a concurrent winner is answered with the winner's record."""
    store = Store()
    once = store.once("k", {"x": 1})

    def create_after_the_winner():
        store.create("k", {"x": 1})()  # the concurrent request commits first
        return store.create("k", {"x": 1})()

    record, replayed = once.run(create_after_the_winner)
    assert replayed and record is store.rows["k"]


def test_integrity_error_without_a_winner_propagates():
    store = Store()

    def create():
        raise IntegrityError("another constraint")

    with pytest.raises(IntegrityError):
        store.once("k", {"x": 1}).run(create)


def test_create_may_return_a_replay_found_under_its_locks():
    store = Store()
    once = store.once("k", {"x": 1})

    def create():
        store.create("k", {"x": 1})()
        return once.replay()

    record, replayed = once.run(create)
    assert replayed and record is store.rows["k"]


def test_writing_first_replays_and_conflicts_through_the_unique_key():
    """Ensure with look_first=False no lookup runs before create; a replay and a conflict are told by the key."""
    store = Store()
    lookups = []

    def once(body):
        return IdempotentCreate(
            lookup=lambda: lookups.append(1) or store.rows.get("k"), request_fingerprint=fingerprint(body)
        )

    first, replayed = once({"x": 1}).run(store.create("k", {"x": 1}), look_first=False)
    assert not replayed and lookups == []
    again, replayed = once({"x": 1}).run(store.create("k", {"x": 1}), look_first=False)
    assert replayed and again is first and lookups == [1]
    with pytest.raises(IdempotencyConflict):
        once({"x": 2}).run(store.create("k", {"x": 2}), look_first=False)
