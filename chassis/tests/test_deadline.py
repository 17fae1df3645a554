"""Request deadlines: bound from X-Request-Deadline, shed once passed, carried to peers by the client."""

import time

import pytest

from chassis import deadline
from chassis.client import PeerUnavailable, ServiceClient
from chassis.lab import resilience

from .urls import DeadlineApi


@pytest.fixture(autouse=True)
def no_runs():
    DeadlineApi.ran.clear()
    yield
    DeadlineApi.ran.clear()


def test_a_future_deadline_is_bound_for_the_view(api):
    """Ensure a deadline still ahead lets the view run, with the deadline bound while it runs and not after."""
    ahead = time.time() + 30
    response = api.post("/deadline/", HTTP_X_REQUEST_DEADLINE=f"{ahead:.3f}")
    assert response.status_code == 200
    assert DeadlineApi.ran == [pytest.approx(ahead, abs=0.001)]
    assert deadline.current() is None


def test_no_deadline_means_none(api):
    """Ensure a request without the header runs with no deadline."""
    assert api.post("/deadline/").status_code == 200
    assert DeadlineApi.ran == [None]


def test_a_passed_deadline_is_shed_before_the_view_runs(api):
    """Ensure a request arriving after its deadline gets a 503 at once, with Retry-After, and nothing runs."""
    response = api.post("/deadline/", HTTP_X_REQUEST_DEADLINE=f"{time.time() - 2:.3f}")
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    body = response.json()
    assert body["code"] == "deadline_exceeded" and "nothing was done" in body["message"]
    assert DeadlineApi.ran == []


@pytest.mark.parametrize("bad", ["soon", "nan", "inf", "-inf", "-5", "0", "", "1e30", "1767225600000"])
def test_a_malformed_deadline_is_a_400_that_runs_nothing(api, bad):
    """Ensure a deadline that is not a finite Unix time in seconds is refused with a clear message."""
    response = api.post("/deadline/", HTTP_X_REQUEST_DEADLINE=bad)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "bad_deadline" and "X-Request-Deadline" in body["message"]
    assert DeadlineApi.ran == []


def test_the_client_sends_the_earlier_of_the_deadline_and_its_own_timeout(peer):
    """Ensure every hop carries a deadline: the caller's own timeout without one, the request's when earlier."""
    client = ServiceClient("payment", base_url=peer.url)
    before = time.time()
    client.get("/x/")
    sent = float(peer.received[-1]["headers"][deadline.HEADER])
    assert before + 0.5 <= sent <= time.time() + 1.0 + 0.5  # now + connect (1 s) + read (0.5 s)

    near = time.time() + 0.3
    with deadline.bound(near):
        client.get("/x/")
    assert float(peer.received[-1]["headers"][deadline.HEADER]) == pytest.approx(near, abs=0.001)


def test_the_client_sends_nothing_once_the_deadline_has_passed(peer):
    """Ensure no call goes out for a request whose deadline passed, and the breaker does not count it."""
    client = ServiceClient("payment", base_url=peer.url)
    with deadline.bound(time.time() - 0.1), pytest.raises(PeerUnavailable) as refused:
        client.post("/x/", json={}, idempotency_key="k-1")
    assert refused.value.rejected and refused.value.attempts == 0
    assert "deadline" in refused.value.reason
    assert peer.received == []
    assert resilience.breaker_for("payment").fail_counter == 0


def test_the_client_does_not_wait_past_the_deadline(peer):
    """Ensure the read timeout is cut to the time left, and no retry starts after the deadline."""
    peer.delay = 1.0
    client = ServiceClient("payment", base_url=peer.url)
    with deadline.bound(time.time() + 0.2), pytest.raises(PeerUnavailable) as failed:
        client.get("/slow/")
    assert failed.value.attempts == 1 and len(peer.received) == 1  # GET is retried, but not past the deadline


def test_lifted_runs_free_of_the_deadline(peer):
    """Ensure work that must finish (a compensation) is sent even after the request's deadline."""
    client = ServiceClient("payment", base_url=peer.url)
    with deadline.bound(time.time() - 1), deadline.lifted():
        assert client.get("/x/").status == 200
    assert len(peer.received) == 1
