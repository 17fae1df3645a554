"""Clients of order_service's peers: one module per peer, built on ``chassis.client``.

Each function sends one call and turns the peer's answer into a small result
object or one of the exceptions below. ``chassis.client.PeerUnavailable``
(no answer, timeout, 5xx after retries) is let through: the caller decides
what an unknown outcome means at that point of the saga. An answer that cannot
be read is treated the same way, since the peer may have acted on the call.
"""

from __future__ import annotations

from chassis.client import PeerResponse, PeerUnavailable


class PeerRefused(Exception):
    """The peer answered with a 4xx that is not one of the expected business refusals."""

    def __init__(self, peer: str, status: int, code: str, message: str, fields: dict | None = None):
        self.peer = peer
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        super().__init__(f"{peer} refused ({status} {code}): {message}")


def refusal(peer: str, response: PeerResponse) -> PeerRefused:
    """A :class:`PeerRefused` from a 4xx answer in the chassis error format (or anything else)."""
    data = response.data if isinstance(response.data, dict) else {}
    fields = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    return PeerRefused(
        peer,
        response.status,
        str(data.get("code") or f"http_{response.status}")[:64],
        str(data.get("message") or f"HTTP {response.status}")[:200],
        fields,
    )


def unreadable(peer: str, what: str, response: PeerResponse) -> PeerUnavailable:
    """A success answer we cannot read: the peer may have acted, so the outcome is unknown."""
    return PeerUnavailable(peer, f"unreadable answer to {what} (HTTP {response.status})", status=response.status)


def as_list(data) -> list:
    """The items of a list answer, paginated (``{"results": [...]}``) or not."""
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        return data["results"]
    if isinstance(data, list):
        return data
    raise ValueError("not a list answer")
