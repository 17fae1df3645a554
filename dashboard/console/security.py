"""The dashboard's Content-Security-Policy.

The pages render what anybody could have put in a span (names, attributes) or a
fault note. Django escapes it; the policy is the second wall: scripts only from
the dashboard's own static files (no inline script, no ``eval``), nothing
loaded from elsewhere, no framing, forms posting only here. Inline ``style``
attributes stay allowed: the waterfall's bars are placed with them, and a style
cannot run code.
"""

from __future__ import annotations

POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", POLICY)
        return response
