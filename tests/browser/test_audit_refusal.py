"""The Audit page in a real browser when an anonymous visitor has used up its audits: it says so, and when.

The partial answers 429 (10 audits per minute per address); htmx drops a 4xx
answer unless the page's script lets it through, so without that the page
would silently keep showing the last audit.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
import redis

from .lab import DASHBOARD_REDIS_DB, ROOT, read_env_file

# The dashboard's default: DASHBOARD_AUDIT_ANONYMOUS_PER_WINDOW audits per 60 s window.
PER_WINDOW = 10


@pytest.fixture
def audit_budget_restored():
    """Forget 127.0.0.1's anonymous audit count afterwards, so the tests after this one may read the audit."""
    yield
    url = read_env_file(ROOT / "var" / "env" / "user.env").get("REDIS_URL", "")
    if not url:  # without Redis the browser lab's dashboard counts in a file cache; its window ends within 60 s
        return
    client = redis.Redis.from_url(urlparse(url)._replace(path=f"/{DASHBOARD_REDIS_DB}").geturl())
    for key in client.scan_iter(match="*console:audit:rate:127.0.0.1:*"):
        client.delete(key)


def test_a_visitor_over_the_audit_limit_is_told_when_the_next_one_runs(anonymous, audit_budget_restored):
    """Ensure the Audit page shows the 429's message (how many seconds until the next audit) in place of the audit."""
    tab = anonymous.open("/audit/")
    tab.locator("[data-testid=audit-age], [data-testid=audit-throttled]").first.wait_for()
    refusal = tab.locator("#audit [data-testid=audit-throttled]")
    statuses = []
    # Two windows' worth at most: the count starts again if a minute boundary passes meanwhile.
    for _ in range(2 * PER_WINDOW + 2):
        if refusal.count():
            break
        with tab.expect_response(lambda r: "/partials/audit/" in r.url) as answer:
            tab.get_by_role("button", name="Run the audit again").click()
        statuses.append(answer.value.status)
        tab.wait_for_function("() => !document.querySelector('#audit.htmx-swapping, #audit.htmx-settling')")
    assert 429 in statuses, statuses
    refusal.wait_for()
    text = refusal.inner_text()
    assert re.fullmatch(r"Too many audits from your address: the next one in \d+ s\. .*", text), text
    assert int(refusal.get_attribute("data-retry-after")) >= 1
