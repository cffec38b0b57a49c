"""Write, read and merge results files.

The writer rewrites the whole file atomically after every record, so a run that
crashes halfway still leaves a valid (unfinished: ``finished_at`` null) file a
report can read. The reader turns every way a file can be wrong into one
located UserError naming the file and the fix, never a traceback.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from harness.errors import Problem, UserError
from harness.results.model import (
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    Check,
    Comparison,
    Environment,
    Measurement,
    Outcome,
    Plan,
    PlannedMode,
    PlannedScenario,
    RunResults,
    Timeline,
    TimelineEvent,
    TimelineSample,
    Timing,
    judge,
)


def save(results: RunResults, path: str | Path) -> None:
    """Write ``results`` to ``path`` atomically (a temp file renamed over it)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = results.model_dump_json(indent=2, exclude_none=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> RunResults:
    """Read and validate one results file; bad input raises a one-line UserError."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _bad(
            name, "file", "no such file", "check the path; results files are *.json"
        ) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise _bad(name, "file", f"cannot read: {exc}", "pass a readable results file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise _bad(name, where, f"invalid JSON: {exc.msg}", "fix or regenerate the file") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise _bad(
            name,
            "schema_version",
            "missing: this is not a podlab results file",
            "pass a file written by a conformance run (podlab test)",
        )
    if data["schema_version"] not in READABLE_VERSIONS:
        readable = " or ".join(str(v) for v in READABLE_VERSIONS)
        raise _bad(
            name,
            "schema_version",
            f"is {data['schema_version']!r}, this podlab reads {readable}",
            "regenerate the results with this podlab version",
        )
    try:
        return RunResults.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _loc(first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise _bad(
            name, where, f"{first['msg']}{more}", "see docs/results-format.md for the format"
        ) from None


def _loc(parts: Sequence[int | str]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "file"


def _bad(name: str, where: str, message: str, hint: str) -> UserError:
    return UserError([Problem(file=name, where=where, message=message, hint=hint)])


def merge(runs: Sequence[RunResults]) -> RunResults:
    """Combine several results files (e.g. one per mode) into one run for a report."""
    if not runs:
        raise ValueError("merge() needs at least one run")
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    modes: list[str] = []
    fallbacks: list[str] = []
    for run in runs:
        modes += [m for m in run.modes if m not in modes]
        fallbacks += [f for f in run.environment.fallbacks if f not in fallbacks]
    finished = [r.finished_at for r in runs]
    topologies = list(dict.fromkeys(r.topology for r in runs))
    return RunResults(
        schema_version=SCHEMA_VERSION,
        run_id="+".join(r.run_id for r in runs),
        started_at=min(r.started_at for r in runs),
        finished_at=None if None in finished else max(f for f in finished if f),
        topology=", ".join(topologies),
        modes=tuple(modes),
        environment=first.environment.model_copy(update={"fallbacks": tuple(fallbacks)}),
        notes="\n".join(dict.fromkeys(r.notes for r in runs if r.notes)),
        measurements=tuple(m for r in runs for m in r.measurements),
        checks=tuple(c for r in runs for c in r.checks),
        timelines=tuple(t for r in runs for t in r.timelines),
        plan=merge_plans([r.plan for r in runs if r.plan is not None]),
        timings=tuple(t for r in runs for t in r.timings),
    )


def merge_plans(plans: Sequence[Plan]) -> Plan | None:
    """One plan for several runs (e.g. one per cluster): the union of modes, covers, scenarios."""
    if not plans:
        return None
    modes: dict[str, PlannedMode] = {}
    cover: list[str] = []
    scenarios: dict[int, PlannedScenario] = {}
    for plan in plans:
        for m in plan.modes:  # an entry's own run knows its cluster
            if m.mode not in modes or (m.cluster and not modes[m.mode].cluster):
                modes[m.mode] = m
        cover += [m for m in plan.heavy_cover if m not in cover]
        for s in plan.scenarios:
            if s.number not in scenarios or s.tests > scenarios[s.number].tests:
                scenarios[s.number] = s
    return Plan(
        matrix=" + ".join(dict.fromkeys(p.matrix for p in plans)),
        policy=" + ".join(dict.fromkeys(p.policy for p in plans)),
        modes=tuple(modes.values()),
        heavy_cover=tuple(cover),
        scenarios=tuple(sorted(scenarios.values(), key=lambda s: s.number)),
    )


@dataclass(frozen=True)
class RunMeta:
    """What a writer needs to know about its run before the first record."""

    run_id: str
    topology: str
    modes: tuple[str, ...]
    environment: Environment
    notes: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class ResultsWriter:
    """Collects a run's measurements and checks and keeps its results file current.

    The conformance plugin's ``record`` fixture wraps one of these; every call
    validates its input at once (a bad unit fails the test that recorded it,
    not the report hours later) and rewrites the file.
    """

    def __init__(self, path: str | Path, run_meta: RunMeta) -> None:
        self.path = Path(path)
        self.meta = run_meta
        self._measurements: list[Measurement] = []
        self._checks: list[Check] = []
        self._timelines: list[Timeline] = []
        self._fallbacks: list[str] = list(run_meta.environment.fallbacks)
        self._finished_at: datetime | None = None
        self._plan: Plan | None = None
        self._timings: list[Timing] = []
        self._flush()

    def set_plan(self, plan: Plan) -> None:
        """What the run set out to do (its matrix, cover and catalogue), for the report."""
        self._plan = plan
        self._flush()

    def timing(
        self, what: str, seconds: float, mode: str = "", labels: Mapping[str, str] | None = None
    ) -> Timing:
        """Where time went: ``what`` ("lab up", "deploy", "mode" …) took ``seconds``."""
        t = Timing(what=what, seconds=max(0.0, seconds), mode=mode, labels=dict(labels or {}))
        self._timings.append(t)
        self._flush()
        return t

    def record(
        self,
        name: str,
        value: float,
        unit: str,
        *,
        mode: str,
        topology: str | None = None,
        scenario: int | None = None,
        threshold: float | None = None,
        comparison: Comparison = "<=",
        passed: bool | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Measurement:
        """Record one measurement; ``passed`` is judged from the threshold if not given."""
        if passed is None and threshold is not None:
            passed = judge(value, threshold, comparison)
        m = Measurement(
            name=name, value=value, unit=unit, threshold=threshold, comparison=comparison,
            passed=passed, mode=mode, topology=topology or self.meta.topology,
            scenario=scenario, labels=dict(labels or {}),
        )  # fmt: skip
        self._measurements.append(m)
        self._flush()
        return m

    def check(
        self,
        scenario: int,
        name: str,
        *,
        mode: str,
        outcome: Outcome,
        message: str = "",
        duration_s: float = 0.0,
        topology: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Check:
        """Record a test outcome (passed/failed/skipped) for a scenario and mode."""
        c = Check(
            scenario=scenario, name=name, mode=mode, outcome=outcome, message=message,
            duration_s=duration_s, topology=topology or self.meta.topology,
            labels=dict(labels or {}),
        )  # fmt: skip
        self._checks.append(c)
        self._flush()
        return c

    def timeline(
        self,
        name: str,
        *,
        mode: str,
        events: Sequence[tuple[float, str]],
        samples: Sequence[tuple[float, float]] = (),
        sample_name: str = "",
        sample_unit: str = "",
        scenario: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Timeline:
        """Record a fault/failover timeline: (t_s, label) events and (t_s, value) samples."""
        t = Timeline(
            name=name, mode=mode, topology=self.meta.topology, scenario=scenario,
            events=tuple(TimelineEvent(t_s=t, label=lb) for t, lb in events),
            samples=tuple(TimelineSample(t_s=t, value=v) for t, v in samples),
            sample_name=sample_name, sample_unit=sample_unit, labels=dict(labels or {}),
        )  # fmt: skip
        self._timelines.append(t)
        self._flush()
        return t

    def note_fallback(self, fallback: str) -> None:
        """Note that the run used a fallback (e.g. "wireguard-go", "userspace-ipip")."""
        if fallback not in self._fallbacks:
            self._fallbacks.append(fallback)
            self._flush()

    def finish(self) -> RunResults:
        """Stamp the finish time, write the file a last time and return the results."""
        self._finished_at = datetime.now(UTC)
        return self._flush()

    def results(self) -> RunResults:
        """The results as recorded so far."""
        env = self.meta.environment.model_copy(update={"fallbacks": tuple(self._fallbacks)})
        return RunResults(
            schema_version=SCHEMA_VERSION,
            run_id=self.meta.run_id,
            started_at=self.meta.started_at,
            finished_at=self._finished_at,
            topology=self.meta.topology,
            modes=self.meta.modes,
            environment=env,
            notes=self.meta.notes,
            measurements=tuple(self._measurements),
            checks=tuple(self._checks),
            timelines=tuple(self._timelines),
            plan=self._plan,
            timings=tuple(self._timings),
        )

    def _flush(self) -> RunResults:
        results = self.results()
        save(results, self.path)
        return results
