"""Assertions that read like specs: who, what, and what was expected.

``pod-a (c1-w1) cannot reach pod-b 10.244.2.5:8080/tcp: 5/5 lost (timeout 5)``
tells the reader the failing pair, the path and the outcome classes without
opening a log; every suite asserts through these helpers.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.probes.echo import ProbeReport
from harness.probes.ping import PingResult


def probe_problem(report: ProbeReport, want_name: str = "") -> str | None:
    """What is wrong with a probe run ("3/3 lost (timeout 3)", a wrong name), or None."""
    if not report.all_ok:
        return report.describe()
    if want_name:
        wrong = [r for r in report.replies() if want_name not in r.split()]
        if wrong:
            return f"answered, but not by {want_name}: {wrong[0]!r}"
    return None


def reach_failure(src: str, dst: str, report: ProbeReport, want_name: str = "") -> str | None:
    """Why ``report`` fails "``src`` reaches ``dst``" (answering as ``want_name``), or None."""
    problem = probe_problem(report, want_name)
    if problem is None:
        return None
    return f"{src} cannot reach {dst} {report.target}:{report.port}/{report.proto}: {problem}"


def assert_reaches(src: str, dst: str, report: ProbeReport, want_name: str = "") -> None:
    """Every attempt answered (by ``want_name`` when given)."""
    failure = reach_failure(src, dst, report, want_name)
    assert failure is None, failure


def assert_blocked(src: str, dst: str, report: ProbeReport, expect: str) -> None:
    """Every attempt ended as ``expect`` ("timeout" = dropped, "refused" = rejected)."""
    where = f"{dst} {report.target}:{report.port}/{report.proto}"
    other = {k: v for k, v in report.outcomes().items() if k != expect}
    assert not other and report.attempts, (
        f"{src} → {where} should be {expect}, got {report.describe() if other else 'no attempts'}"
    )


def assert_pings(src: str, dst: str, ip: str, result: PingResult) -> None:
    assert result.ok, f"{src} cannot ping {dst} {ip}: {result.describe()}"


def all_failures(failures: Sequence[str | None]) -> list[str]:
    """Drop the Nones of a matrix of ``reach_failure`` results."""
    return [f for f in failures if f]


def assert_matrix(failures: Sequence[str | None], total: int, what: str) -> None:
    """One assertion for a whole matrix, listing every failing pair (first 8)."""
    bad = all_failures(failures)
    lines = "\n  ".join(bad[:8]) + (f"\n  … and {len(bad) - 8} more" if len(bad) > 8 else "")
    assert not bad, f"{what}: {len(bad)}/{total} pairs failed:\n  {lines}"
