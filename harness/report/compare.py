"""Compare a run against a baseline run: deltas, regressions, fixes.

A **regression** is any of:

- a measurement that moved in its worse direction by more than
  REGRESSION_TOLERANCE (10 %) of the baseline figure — throughput down > 10 %,
  latency up > 10 %;
- a measurement that met its threshold in the baseline and misses it now;
- a check that passed in the baseline and fails now.

The better direction comes from the measurement's threshold when it has one
(">=": higher is better, "<=": lower is better), else from its unit and name
(bit/s, packets/s, requests/s, ratios: higher; seconds, CPU cores, counts of
losses, drops, retransmits or errors: lower). Measurements with no known
direction show their delta but are never called a regression on value alone.
Measurements match by name, mode, scenario and labels (repeat counters
ignored); repeats are summarised by their median.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from harness.report.fmt import label_key, median
from harness.results.model import Measurement, RunResults

REGRESSION_TOLERANCE = 0.10
_HIGHER_UNITS = ("bps", "pps", "rps", "ratio")
_LOWER_UNITS = ("s", "cores")
_LOWER_WORDS = ("loss", "lost", "drop", "retrans", "error", "plaintext", "canary")

MKey = tuple[str, str, int | None, tuple[tuple[str, str], ...]]


def better_direction(m: Measurement) -> str | None:
    """ "higher", "lower", or None when nothing says which way is better."""
    if m.threshold is not None:
        return "higher" if m.comparison == ">=" else "lower"
    if m.unit in _HIGHER_UNITS:
        return "higher"
    if m.unit in _LOWER_UNITS:
        return "lower"
    if m.unit in ("count", "percent") and any(w in m.name for w in _LOWER_WORDS):
        return "lower"
    return None


@dataclass(frozen=True)
class MeasurementDelta:
    """One measurement in both runs (or only one of them)."""

    name: str
    mode: str
    scenario: int | None
    labels: tuple[tuple[str, str], ...]
    unit: str
    old: float | None
    new: float | None
    change: float | None  # relative: (new - old) / |old|
    better: str | None
    status: str  # "regression" | "improvement" | "unchanged" | "new" | "gone"
    reason: str


@dataclass(frozen=True)
class CheckDelta:
    scenario: int
    name: str
    mode: str
    old: str | None
    new: str | None
    # "regression" | "fixed" | "new failure" | "not run now" | "unchanged" | "new" | "gone"
    status: str


@dataclass(frozen=True)
class Comparison:
    baseline_id: str
    measurements: tuple[MeasurementDelta, ...]
    checks: tuple[CheckDelta, ...]

    @property
    def regressions(self) -> int:
        statuses = [d.status for d in self.measurements] + [d.status for d in self.checks]
        return statuses.count("regression")

    @property
    def improvements(self) -> int:
        return sum(1 for d in self.measurements if d.status == "improvement") + sum(
            1 for d in self.checks if d.status == "fixed"
        )


def _group(run: RunResults) -> dict[MKey, list[Measurement]]:
    out: dict[MKey, list[Measurement]] = defaultdict(list)
    for m in run.measurements:
        out[(m.name, m.mode, m.scenario, label_key(m.labels))].append(m)
    return out


def _all_passed(ms: list[Measurement]) -> bool | None:
    verdicts = [m.passed for m in ms if m.passed is not None]
    return all(verdicts) if verdicts else None


def _delta(key: MKey, old: list[Measurement], new: list[Measurement]) -> MeasurementDelta:
    name, mode, scenario, labels = key
    ref = (new or old)[0]
    o, n = median(m.value for m in old), median(m.value for m in new)
    better = better_direction(ref)
    change = (n - o) / abs(o) if (o is not None and n is not None and o != 0) else None
    status, reason = "unchanged", ""
    if o is None:
        status = "new"
    elif n is None:
        status = "gone"
    else:
        status, reason = _judge(change, better, _all_passed(old), _all_passed(new))
    return MeasurementDelta(
        name, mode, scenario, labels, ref.unit, o, n, change, better, status, reason
    )


def _judge(
    change: float | None, better: str | None, was_ok: bool | None, is_ok: bool | None
) -> tuple[str, str]:
    if was_ok is True and is_ok is False:
        return "regression", "met its threshold in the baseline, misses it now"
    if was_ok is False and is_ok is True:
        return "improvement", "missed its threshold in the baseline, meets it now"
    if change is None or better is None:
        return "unchanged", ""
    worse = -change if better == "higher" else change
    moved = f"{'down' if change < 0 else 'up'} {abs(change) * 100:.1f} %, {better} is better"
    if worse > REGRESSION_TOLERANCE:
        return "regression", moved
    if -worse > REGRESSION_TOLERANCE:
        return "improvement", moved
    return "unchanged", ""


def _check_status(old: str | None, new: str | None) -> str:
    if old is None:
        return "new failure" if new == "failed" else "new"
    if new is None:
        return "gone"
    if old == "passed" and new == "failed":
        return "regression"
    if old == "failed" and new == "passed":
        return "fixed"
    if old in ("passed", "failed") and new not in ("passed", "failed"):
        return "not run now"
    return "unchanged"


def _fold(outcomes: list[str]) -> str:
    """A test's outcome over its repeats: a failure wins, then a pass, else why it did not run."""
    for outcome in ("failed", "passed"):
        if outcome in outcomes:
            return outcome
    return outcomes[0] if outcomes else "skipped"


class IncomparableRuns(ValueError):
    """Emulated figures against native ones: the comparison would say nothing."""


def compare(run: RunResults, baseline: RunResults) -> Comparison:
    """Deltas of every measurement and check between ``baseline`` and ``run``.

    Refuses (``IncomparableRuns``) when one run is emulated (VM guests under TCG)
    and the other is not: a 30x slower CPU would show as regressions everywhere.
    """
    if run.environment.emulated != baseline.environment.emulated:
        which = {True: "emulated (TCG)", False: "native"}
        raise IncomparableRuns(
            f"cannot compare {which[run.environment.emulated]} run {run.run_id} with "
            f"{which[baseline.environment.emulated]} baseline {baseline.run_id}: "
            "emulated figures are never compared with native ones"
        )
    new, old = _group(run), _group(baseline)
    keys = list(dict.fromkeys([*new, *old]))
    deltas = [_delta(k, old.get(k, []), new.get(k, [])) for k in keys]
    rank = {"regression": 0, "improvement": 1, "new": 2, "gone": 3, "unchanged": 4}
    deltas.sort(key=lambda d: (rank[d.status], d.name, d.mode))

    def outcomes(r: RunResults) -> dict[tuple[int, str, str], str]:
        acc: dict[tuple[int, str, str], list[str]] = defaultdict(list)
        for c in r.checks:
            acc[(c.scenario, c.name, c.mode)].append(c.outcome)
        return {k: _fold(v) for k, v in acc.items()}

    now, then = outcomes(run), outcomes(baseline)
    checks = [
        CheckDelta(
            k[0], k[1], k[2], then.get(k), now.get(k), _check_status(then.get(k), now.get(k))
        )
        for k in dict.fromkeys([*now, *then])
    ]
    crank = {"regression": 0, "new failure": 1, "fixed": 2, "not run now": 3, "gone": 4, "new": 5,
             "unchanged": 6}  # fmt: skip
    checks.sort(key=lambda c: (crank[c.status], c.scenario, c.mode, c.name))
    return Comparison(baseline.run_id, tuple(deltas), tuple(checks))
