"""The peer client against a real HTTP server on loopback, scripted answer by answer."""

import socket
import threading

import jwt
import pytest

from chassis.client import PeerUnavailable, ServiceClient
from chassis.requestid import bind_request_id


def test_get_is_retried_on_503_then_succeeds(peer):
    """Ensure an idempotent call survives transient 503s and reports its attempts."""
    peer.script = [(503, None), (503, None), (200, {"items": [1]})]
    response = ServiceClient("payment", base_url=peer.url).get("/api/things/")
    assert response.status == 200 and response.data == {"items": [1]}
    assert response.attempts == 3
    assert len(peer.received) == 3


def test_post_without_idempotency_key_is_not_retried(peer):
    """Ensure a non-idempotent POST is sent once, even when the answer is a 503."""
    peer.script = [(503, None), (200, {})]
    with pytest.raises(PeerUnavailable) as failure:
        ServiceClient("payment", base_url=peer.url).post("/internal/charges/", json={"a": 1})
    assert failure.value.status == 503
    assert len(peer.received) == 1


def test_post_with_idempotency_key_is_retried_with_the_same_key(peer):
    """Ensure a keyed POST is retried and every attempt carries the same key."""
    peer.script = [(502, None), (201, {"id": "c1"})]
    response = ServiceClient("payment", base_url=peer.url).post(
        "/internal/charges/", json={"a": 1}, idempotency_key="order-1-charge"
    )
    assert response.status == 201
    assert [r["headers"]["Idempotency-Key"] for r in peer.received] == ["order-1-charge"] * 2


def test_4xx_is_an_answer_not_a_failure(peer):
    """Ensure business refusals come back to the caller without retries."""
    peer.script = [(409, {"code": "insufficient_stock"})]
    response = ServiceClient("inventory", base_url=peer.url).post(
        "/internal/reservations/", json={}, idempotency_key="k-12345678"
    )
    assert response.status == 409 and response.data["code"] == "insufficient_stock"
    assert len(peer.received) == 1


def test_500_is_not_retried(peer):
    """Ensure a 500 (a bug, not a transient state) is not hammered with retries."""
    peer.script = [(500, None), (200, {})]
    with pytest.raises(PeerUnavailable):
        ServiceClient("inventory", base_url=peer.url).get("/x/")
    assert len(peer.received) == 1


def test_request_id_and_service_token_are_sent(peer, settings):
    """Ensure the current request id travels and the caller authenticates as itself for that audience."""
    bind_request_id("flow-abc-1")
    ServiceClient("payment", base_url=peer.url).get("/x/")
    headers = peer.received[0]["headers"]
    assert headers["X-Request-ID"] == "flow-abc-1"
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == settings.CHASSIS["SERVICE"] and claims["aud"] == "payment" and claims["typ"] == "service"


def test_connection_refused_is_retried_then_unavailable(settings):
    """Ensure a dead peer gives PeerUnavailable after the configured attempts, even for POST."""
    settings.CHASSIS = {**settings.CHASSIS, "RETRY_BACKOFF": 0.01, "RETRY_ATTEMPTS": 3}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PeerUnavailable) as failure:
        ServiceClient("payment", base_url=f"http://127.0.0.1:{port}").post("/internal/charges/", json={})
    assert failure.value.attempts == 3
    assert "connection failed" in failure.value.reason


def test_read_timeout_of_non_idempotent_call_is_not_retried(settings):
    """Ensure a POST that timed out (it may have been acted on) is not sent again."""
    settings.CHASSIS = {**settings.CHASSIS, "RETRY_BACKOFF": 0.01, "READ_TIMEOUT": 0.2}
    accepted = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def accept_and_stall():
        listener.settimeout(3)
        try:
            while True:
                conn, _ = listener.accept()
                accepted.append(conn)
        except OSError:
            pass

    threading.Thread(target=accept_and_stall, daemon=True).start()
    try:
        with pytest.raises(PeerUnavailable) as failure:
            ServiceClient("payment", base_url=f"http://127.0.0.1:{listener.getsockname()[1]}").post("/slow/", json={})
        assert failure.value.reason == "read timed out"
        assert len(accepted) == 1
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
