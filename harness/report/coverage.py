"""What a run covered and where its time went: the coverage table and the time tables.

Read from the results alone (the run's plan, its checks, its timings). A cell
of the coverage table never reads as checked unless a check in it ran:
"n/a" (not applicable to the mode or lab, the reason on hover), "not selected"
(the matrix ran it in other modes, which the hover names) and "skipped" (did
not run for a reason found at run time) are told apart, and a scenario with no
shipped suite says so.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from harness.report.analysis import run_modes
from harness.results.model import NOT_RUN, SCENARIOS, Check, PlannedScenario, RunResults

STATE_TEXT = {"not-applicable": "n/a", "not-selected": "not sel.", "skipped": "skipped"}
ALL_FAMILIES = ("bridged", "routed", "encapsulated", "direct", "encrypted", "clear")


@dataclass(frozen=True)
class CoverageCell:
    """One scenario in one mode: what ran (passed/failed) and what did not (and why)."""

    state: str  # passed | failed | not-applicable | not-selected | skipped | none
    passed: int = 0
    failed: int = 0
    not_run: tuple[tuple[str, int], ...] = ()  # (outcome, count) of checks that did not run
    details: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        if self.state == "failed":
            return f"✗ {self.failed}/{self.passed + self.failed}"
        if self.state == "passed":
            return f"✓ {self.passed}"
        return STATE_TEXT.get(self.state, "—")

    @property
    def note(self) -> str:
        """Checks of a cell that ran which did not run too: "+3 n/a" (else empty)."""
        if self.state not in ("passed", "failed"):
            return ""
        return " ".join(f"+{n} {STATE_TEXT[o]}" for o, n in self.not_run)


@dataclass(frozen=True)
class CoverageRow:
    number: int
    title: str
    cost: str
    cells: tuple[CoverageCell, ...]
    families: str  # "6/6" or "4/5: not routed" or ""
    note: str  # "no shipped suite", "bench/bench_proxy.py", …

    @property
    def ran(self) -> bool:
        return any(c.state in ("passed", "failed") for c in self.cells)


@dataclass(frozen=True)
class Coverage:
    modes: tuple[str, ...]
    families: dict[str, tuple[str, ...]]  # mode -> its families
    matrix: str
    heavy_cover: tuple[str, ...]
    rows: tuple[CoverageRow, ...]


def _cell(checks: list[Check]) -> CoverageCell:
    if not checks:
        return CoverageCell("none")
    n: Counter[str] = Counter(c.outcome for c in checks)
    not_run = tuple((o, n[o]) for o in NOT_RUN if n[o])
    order = ("failed", "passed", "skipped", "not-selected", "not-applicable")
    state = next(o for o in order if n[o])
    details = tuple(
        f"{c.outcome}: {c.name}" + (f" — {c.message}" if c.message else "")
        for c in sorted(checks, key=lambda c: order.index(c.outcome))
    )
    return CoverageCell(state, n["passed"], n["failed"], not_run, details)


def _families(checks: list[Check], fams: dict[str, tuple[str, ...]]) -> str:
    """Of the families where the scenario applies, how many it ran in (and which it missed)."""
    if not fams:
        return ""
    wanted = {f for c in checks if c.outcome != "not-applicable" for f in fams.get(c.mode, ())}
    ran = {f for c in checks if c.outcome in ("passed", "failed") for f in fams.get(c.mode, ())}
    if not wanted:
        return ""
    missing = [f for f in ALL_FAMILIES if f in wanted - ran]
    text = f"{len(wanted & ran)}/{len(wanted)}"
    return f"{text}: not {', '.join(missing)}" if missing else text


def coverage(run: RunResults) -> Coverage:
    """Every catalogue scenario (the plan's, else those with checks) × every mode of the run."""
    plan = run.plan
    modes = tuple(m.mode for m in plan.modes) if plan else ()
    modes += tuple(m for m in run_modes(run) if m not in modes and m != "none")
    fams = {m.mode: m.families for m in plan.modes} if plan else {}
    by_key: dict[tuple[int, str], list[Check]] = defaultdict(list)
    for c in run.checks:
        by_key[(c.scenario, c.mode)].append(c)
    planned = {s.number: s for s in plan.scenarios} if plan else {}
    numbers = sorted(set(planned) | {c.scenario for c in run.checks})
    rows = []
    for number in numbers:
        entry = planned.get(number) or PlannedScenario(
            number=number, title=SCENARIOS.get(number, f"scenario {number}"), tests=1
        )
        checks = [c for m in modes for c in by_key[(number, m)]]
        cells = tuple(_cell(by_key[(number, m)]) for m in modes)
        note = ""
        if not checks and entry.tests == 0:
            note = f"measured by {entry.elsewhere}" if entry.elsewhere else "no shipped suite yet"
        rows.append(CoverageRow(number, entry.title, entry.cost, cells, _families(checks, fams),
                                note))  # fmt: skip
    return Coverage(
        modes, fams, plan.matrix if plan else "", plan.heavy_cover if plan else (), tuple(rows)
    )


@dataclass(frozen=True)
class ScenarioTime:
    number: int
    title: str
    runs: int  # checks that ran (passed or failed)
    seconds: float
    share: float  # of all test time
    slowest: str  # "test_x [mode] 12.3 s"


@dataclass(frozen=True)
class ModeTime:
    mode: str
    deploy_s: float | None
    ready_s: float | None
    tests_s: float | None
    cluster: str = ""  # where it ran, when runs were split per cluster
    waited_s: float | None = None  # for the other cluster's quiet checks

    @property
    def total_s(self) -> float:
        return sum(v for v in (self.deploy_s, self.ready_s, self.tests_s) if v is not None)


@dataclass(frozen=True)
class Times:
    scenarios: tuple[ScenarioTime, ...]
    modes: tuple[ModeTime, ...]
    other: tuple[tuple[str, float], ...]  # ("lab up", s), ("tear down", s)
    tests_s: float
    wall_s: float | None  # started → finished, when the run finished


def _mode_time(mode: str, acc: dict[tuple[str, str], float], cluster: str) -> ModeTime:
    def get(what: str) -> float | None:
        return acc.get((mode, what))

    return ModeTime(mode, get("deploy"), get("ready"), get("mode"), cluster, get("quiet wait"))


def times(run: RunResults, coverage_titles: dict[int, str] | None = None) -> Times:
    """Per-scenario time (from the checks), per-mode time and the rest (from the timings)."""
    titles = coverage_titles or {}
    ran = [c for c in run.checks if c.outcome in ("passed", "failed", "skipped")]
    total = sum(c.duration_s for c in ran) or 0.0
    per: dict[int, list[Check]] = defaultdict(list)
    for c in ran:
        per[c.scenario].append(c)
    rows = []
    for number, checks in per.items():
        seconds = sum(c.duration_s for c in checks)
        top = max(checks, key=lambda c: c.duration_s)
        rows.append(ScenarioTime(
            number, titles.get(number) or SCENARIOS.get(number, f"scenario {number}"),
            sum(1 for c in checks if c.outcome != "skipped"), seconds,
            seconds / total if total else 0.0, f"{top.name} [{top.mode}] {top.duration_s:.1f} s",
        ))  # fmt: skip
    rows.sort(key=lambda r: -r.seconds)
    acc: dict[tuple[str, str], float] = defaultdict(float)
    other: dict[str, float] = defaultdict(float)
    for t in run.timings:
        if t.mode and t.what in ("deploy", "ready", "mode", "quiet wait"):
            acc[(t.mode, t.what)] += t.seconds
        else:
            other[t.what] += t.seconds
    where = {m.mode: m.cluster for m in run.plan.modes} if run.plan else {}
    modes = tuple(_mode_time(m, acc, where.get(m, "")) for m in dict.fromkeys(
        t.mode for t in run.timings if t.mode))  # fmt: skip
    wall = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
    return Times(tuple(rows), modes, tuple(other.items()), total, wall)
