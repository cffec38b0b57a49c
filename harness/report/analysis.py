"""What a report says about one run: summary, SLOs, encryption (coverage: coverage.py).

Pure functions from RunResults to small frozen rows the templates print; they
decide nothing about HTML and are unit-tested directly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from harness.report.fmt import fmt_labels, fmt_threshold, fmt_value
from harness.results.model import Measurement, RunResults

ENCRYPTION_SCENARIOS = (19, 20)


@dataclass(frozen=True)
class Summary:
    """Headline counts: checks by outcome and SLOs (thresholded measurements) met."""

    checks: int
    passed: int
    failed: int
    skipped: int  # did not run, for a reason found at run time
    slos: int
    slos_met: int
    measurements: int
    modes: tuple[str, ...]
    failures: tuple[str, ...]
    not_applicable: int = 0
    not_selected: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing failed: no failed check and no missed threshold."""
        return self.failed == 0 and self.slos_met == self.slos


def run_modes(run: RunResults) -> tuple[str, ...]:
    """The run's modes in its own order, then any others seen in its records."""
    modes = list(run.modes)
    seen = [c.mode for c in run.checks] + [m.mode for m in run.measurements]
    for mode in seen + [t.mode for t in run.timelines]:
        if mode not in modes and mode != "underlay":
            modes.append(mode)
    return tuple(modes)


def summarize(run: RunResults) -> Summary:
    """Count outcomes and SLOs; list what failed, by scenario, mode and name."""
    outcomes = Counter(c.outcome for c in run.checks)
    slos = [m for m in run.measurements if m.threshold is not None]
    failures = [f"#{c.scenario} {c.name} [{c.mode}]" for c in run.checks if c.outcome == "failed"]
    failures += [
        f"{m.name} [{m.mode}] = {fmt_value(m.value, m.unit)}, wanted "
        f"{fmt_threshold(m.threshold, m.comparison, m.unit)}"
        for m in slos
        if m.passed is False
    ]
    return Summary(
        checks=len(run.checks),
        passed=outcomes["passed"],
        failed=outcomes["failed"],
        skipped=outcomes["skipped"],
        slos=len(slos),
        slos_met=sum(1 for m in slos if m.passed),
        measurements=len(run.measurements),
        modes=run_modes(run),
        failures=tuple(failures),
        not_applicable=outcomes["not-applicable"],
        not_selected=outcomes["not-selected"],
    )


def any_failed(run: RunResults) -> bool:
    """Whether ``--fail-on-fail`` should fail: a failed check or a missed threshold."""
    s = summarize(run)
    return s.failed > 0 or s.slos_met < s.slos


@dataclass(frozen=True)
class SloCell:
    """One mode's figure(s) for one SLO; ``passed`` is False if any of them missed."""

    values: tuple[str, ...]
    passed: bool | None

    @property
    def value(self) -> str:
        return ", ".join(self.values)


@dataclass(frozen=True)
class SloRow:
    """One thresholded measurement (name, labels, threshold) across the modes."""

    scenario: int | None
    name: str
    labels: str
    threshold: str
    cells: tuple[SloCell | None, ...]

    @property
    def missed(self) -> int:
        return sum(1 for c in self.cells if c is not None and c.passed is False)


@dataclass(frozen=True)
class SloTable:
    modes: tuple[str, ...]
    rows: tuple[SloRow, ...]


def slo_table(run: RunResults) -> SloTable:
    """Every measurement with a threshold, one row per name/labels/threshold, a column per mode.

    Rows with a miss come first; a cell holds every figure of that mode (repeats).
    """
    slos = [m for m in run.measurements if m.threshold is not None]
    modes = tuple(m for m in run_modes(run) if any(x.mode == m for x in slos))
    groups: dict[tuple[object, ...], dict[str, list[Measurement]]] = {}
    for m in slos:
        key = (m.scenario, m.name, fmt_labels(m.labels), m.threshold, m.comparison, m.unit)
        groups.setdefault(key, {}).setdefault(m.mode, []).append(m)
    rows = []
    for (scenario, name, labels, _t, _c, _u), by_mode in groups.items():
        first = next(iter(by_mode.values()))[0]
        cells = tuple(_slo_cell(by_mode.get(mode, [])) for mode in modes)
        threshold = fmt_threshold(first.threshold, first.comparison, first.unit)
        rows.append(SloRow(scenario, name, labels, threshold, cells))  # type: ignore[arg-type]
    rows.sort(key=lambda r: (r.missed == 0, r.scenario or 99, r.name, r.labels))
    return SloTable(modes, tuple(rows))


def _slo_cell(ms: list[Measurement]) -> SloCell | None:
    if not ms:
        return None
    return SloCell(tuple(fmt_value(m.value, m.unit) for m in ms), all(m.passed for m in ms))


@dataclass(frozen=True)
class EvidenceRow:
    """What a capture saw (or what an encryption check concluded) for one mode."""

    mode: str
    scenario: int
    what: str
    capture: str
    encryption: str
    control: str
    seen: str
    verdict: str  # "passed" | "failed" | "skipped" | "info"


def _is_evidence(labels: dict[str, str], scenario: int | None) -> bool:
    return scenario in ENCRYPTION_SCENARIOS or "capture" in labels


def _evidence_from_measurement(m: Measurement) -> EvidenceRow:
    verdict = "info" if m.passed is None else ("passed" if m.passed else "failed")
    seen = fmt_value(m.value, m.unit)
    if m.threshold is not None:
        seen += f" (expected {fmt_threshold(m.threshold, m.comparison, m.unit)})"
    return EvidenceRow(
        mode=m.mode,
        scenario=m.scenario or 19,
        what=m.name,
        capture=m.labels.get("capture", ""),
        encryption=m.labels.get("encryption", ""),
        control=m.labels.get("control", ""),
        seen=seen,
        verdict=verdict,
    )


def evidence_rows(run: RunResults) -> tuple[EvidenceRow, ...]:
    """Encryption evidence from measurements and checks of scenarios 19–20 (or captures)."""
    rows = [
        _evidence_from_measurement(m)
        for m in run.measurements
        if _is_evidence(m.labels, m.scenario)
    ]
    rows += [
        EvidenceRow(
            mode=c.mode,
            scenario=c.scenario,
            what=c.name,
            capture=c.labels.get("capture", ""),
            encryption=c.labels.get("encryption", ""),
            control=c.labels.get("control", ""),
            seen=c.message or "—",
            verdict=c.outcome,
        )
        for c in run.checks
        if _is_evidence(c.labels, c.scenario) and c.outcome != "skipped"
    ]
    return tuple(sorted(rows, key=lambda r: (r.mode, r.scenario, r.control, r.what)))


def environment_rows(run: RunResults) -> tuple[tuple[str, str], ...]:
    """The environment as (field, value) pairs for a two-column table."""
    env = run.environment
    dirty = {None: "", True: " (uncommitted changes)", False: ""}[env.git_dirty]
    rows = [
        ("Kernel", env.kernel),
        ("CPU", f"{env.cpu_count} × {env.cpu_model or 'unknown model'}"),
        ("Python", env.python),
        ("podlab", env.podlab),
        ("Git commit", env.git_commit + dirty),
        ("Host", env.hostname),
        ("Fallbacks in use", ", ".join(env.fallbacks) or "none"),
        ("Lab backend", env.backend),
    ]
    if env.emulated:
        rows.append(("EMULATED", "VM guests ran under TCG emulation: every figure of this run "
                     "is an emulated one, not comparable with native figures"))  # fmt: skip
    rows += [
        (f"Node {n.node}", f"{n.backend}, kernel {n.kernel}" + (f", {n.accel}" if n.accel else ""))
        for n in env.nodes
    ]
    rows += [(f"{tool}", version) for tool, version in sorted(env.tools.items())]
    return tuple((k, v) for k, v in rows if v)
