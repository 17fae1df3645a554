"""Summarise the suites that ``make test`` ran, from their JUnit XML reports.

Usage: python -m labctl.testreport RESULTS_DIR SUITE=STATUS [SUITE=STATUS ...]

STATUS is ``passed``, ``failed``, ``no-tests`` or ``missing``. Each pytest suite
that ran left ``RESULTS_DIR/<suite>.xml``; a step without one (``setup``) is
listed with its status only. Prints one line per suite and a total
line that adds up the test cases of every suite (a suite that failed without
a failing test case, e.g. pytest could not start, counts as one failure, so the
total never reads "0 failed" when something failed); exits 1 if any suite failed.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        return self


def read_junit(path: Path) -> Counts:
    """Count the test cases of one pytest ``--junitxml`` report."""
    if not path.exists():
        return Counts()
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = Counts()
    for suite in suites:
        tests = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts += Counts(tests - failed - skipped, failed, skipped)
    return counts


LABELS = {
    "passed": "passed",
    "failed": "FAILED",
    "no-tests": "FAILED (no test ran)",
    "missing": "skipped (directory not there yet)",
}


def main(argv: list[str]) -> int:
    results_dir = Path(argv[0])
    total = Counts()
    failed_suites = []
    print("\n== make test: summary ==")
    for item in argv[1:]:
        suite, _, status = item.partition("=")
        report = results_dir / f"{suite}.xml"
        counts = read_junit(report)
        total += counts
        if status in ("failed", "no-tests"):
            failed_suites.append(suite)
            if counts.failed == 0:
                total.failed += 1
        detail = ""
        if report.exists():
            detail = f"  ({counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped)"
        print(f"  {suite:<20} {LABELS.get(status, status)}{detail}")
    if failed_suites:
        print(f"  failing suites: {' '.join(failed_suites)}")
    print(f"total: {total.passed} passed, {total.failed} failed, {total.skipped} skipped")
    return 1 if failed_suites else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
