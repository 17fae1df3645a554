"""The dashboard's Content-Security-Policy, and pages that keep to it (no inline script)."""

from __future__ import annotations

import re

import pytest

from collector import services
from console.security import POLICY

from .test_collector_traces import row

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


def test_every_page_carries_the_policy(client):
    """Ensure the policy is on pages, partials and JSON alike, and allows scripts from the dashboard only."""
    for url in ("/traces/", "/labs/", "/partials/traces/", "/api/traces/", "/no-such-page/"):
        response = client.get(url)
        assert response["Content-Security-Policy"] == POLICY, url
    directives = dict(part.split(" ", 1) for part in POLICY.split("; "))
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"


def test_an_attacker_supplied_span_name_is_escaped_and_no_page_has_an_inline_script(staff):
    """Ensure a span named like a script shows as text, and the pages the policy protects run no inline script."""
    services.spans_ingest(rows=[row(11, 1, name="<script>alert(1)</script>", request_id="rid-x")])
    trace_page = staff.get(f"/traces/{11:032x}/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in trace_page
    pages = ("/", "/traces/", f"/traces/{11:032x}/", "/labs/", "/labs/05-circuit-breaker/", "/faults/", "/resilience/")
    for url in (*pages, "/load/", "/flows/", "/data/", "/audit/"):
        html = staff.get(url).content.decode()
        assert not INLINE_SCRIPT.search(html), (url, INLINE_SCRIPT.search(html))
