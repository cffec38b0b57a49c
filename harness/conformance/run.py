"""One conformance run: its options, its results writer, its per-mode timings.

The plugin keeps one ``Run`` in the pytest config; fixtures and hooks reach it
there. The results writer is made lazily, at the first thing worth recording,
so that loading the plugin into an unrelated pytest session (it is registered
for every session through the ``pytest11`` entry point) writes nothing.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness.conformance.labctl import Lab
from harness.conformance.matrix import Matrix
from harness.conformance.modes import ModeSpec
from harness.lab import sysns
from harness.results.model import Comparison, Outcome
from harness.results.store import ResultsWriter, RunMeta


def process_age_s(stat: str | None = None, proc_stat: str | None = None) -> float | None:
    """Seconds since this process started (Linux ``/proc``), None where it cannot tell.

    A lockstep phase starts three ``podlab test`` processes; what each spends before its
    first check (Python and pytest start-up, collection, the lab, the nodes, the ready
    wait) is recorded as the ``start-up`` timing (fixtures.mode). ``stat`` and
    ``proc_stat``: the texts of /proc/self/stat and /proc/stat (for tests).
    """
    try:
        stat = stat if stat is not None else Path("/proc/self/stat").read_text()
        proc_stat = proc_stat if proc_stat is not None else Path("/proc/stat").read_text()
        ticks = int(sysns.stat_fields(stat)[19])
        boot = next(int(ln.split()[1]) for ln in proc_stat.splitlines() if ln.startswith("btime "))
        return max(0.0, time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


@dataclass
class Options:
    lab: str | None = None
    topology: Path | None = None
    modes: tuple[str, ...] = ()
    matrix: str | None = None  # "default" | "full"; None: the modes given (or the lab's own)
    cluster: str | None = None  # test this cluster only (--cluster)
    part: tuple[int, int] | None = None  # (K, N): the K-th of N parts of the matrix (--part)
    scope: str | None = None  # "cluster" or "lab": only scenarios of that scope (--scope)
    quiet_lock: Path | None = None  # take turns with other runs (--quiet-lock)
    entry: str | None = None  # lockstep: only this entry of the matrix (--entry)
    deal: tuple[int, int] | None = None  # lockstep: the K-th of N shares of its checks (--deal)
    ssh_keep: str | None = None  # lockstep: this role's ssh masters outlive the run (--ssh-keep)
    lab_decisions: bool = False  # lockstep: also record the idle mesh run's decisions
    results: Path | None = None
    keep_lab: bool = False
    thorough: bool = False


@dataclass
class Run:
    """The state of one ``podlab test`` session."""

    options: Options
    lab: Lab | None = None
    current: ModeSpec | None = None
    matrix: Matrix | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    writer: ResultsWriter | None = None
    mode_seconds: dict[str, float] = field(default_factory=dict)
    mode_started_at: float = 0.0  # wall clock (epoch) when the current mode's tests began
    _mode_started: float = 0.0
    # Seconds spent in session fixtures (lab, deploy, waits) since a test last took them:
    # recorded as timings of their own, so not billed to the test whose setup ran them.
    unbilled_s: float = 0.0
    waited_s: float = 0.0  # for the quiet lock, in the current mode

    def take_unbilled(self) -> float:
        spent, self.unbilled_s = self.unbilled_s, 0.0
        return spent

    @property
    def topology_name(self) -> str:
        if self.lab:
            return self.lab.topology
        if self.options.topology:
            return self.options.topology.stem.removesuffix(".clab")
        return self.options.lab or "unknown"

    @property
    def run_id(self) -> str:
        cluster = f"-{self.options.cluster}" if self.options.cluster else ""
        return f"{self.started:%Y%m%dT%H%M%SZ}-{self.topology_name}{cluster}"

    def results_path(self) -> Path:
        base = self.options.results or Path(tempfile.gettempdir()) / "podlab-results"
        return base / f"{self.run_id}.json"

    def get_writer(self) -> ResultsWriter:
        if self.writer is None:
            from harness.results import env

            meta = RunMeta(
                run_id=self.run_id,
                topology=self.topology_name,
                modes=tuple(self.options.modes) or ((str(self.current),) if self.current else ()),
                environment=env.capture(lab=self.options.lab or self.topology_name),
                started_at=self.started,
            )
            self.writer = ResultsWriter(self.results_path(), meta)
        return self.writer

    def mode_started(self, spec: ModeSpec) -> None:
        self.current = spec
        self._mode_started = time.monotonic()
        self.mode_started_at = time.time()

    def mode_finished(self) -> None:
        if self.current is not None:
            key = str(self.current)
            elapsed = time.monotonic() - self._mode_started
            self.mode_seconds[key] = self.mode_seconds.get(key, 0.0) + elapsed

    def check(
        self, scenario: int, name: str, mode: str, outcome: Outcome, message: str, duration: float,
        extra: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Record a check; ``extra``: more labels (how it held the quiet lock's machine)."""
        labels = {"cluster": self.options.cluster} if self.options.cluster else {}
        labels.update(extra or {})
        self.get_writer().check(
            scenario, name, mode=mode, outcome=outcome, message=message[:2000],
            duration_s=max(0.0, duration), labels=labels,
        )  # fmt: skip

    def finish(self) -> Path | None:
        if self.writer is None:
            return None
        self.writer.finish()
        return self.writer.path


@dataclass
class Recorder:
    """The ``record`` fixture: measurements of one test, tagged with its mode and scenario."""

    run: Run
    mode: str
    scenario: int | None
    test: str

    def __call__(
        self,
        name: str,
        value: float,
        unit: str,
        *,
        threshold: float | None = None,
        comparison: Comparison = "<=",
        labels: dict[str, str] | None = None,
        mode: str | None = None,
    ) -> None:
        """Record ``name`` = ``value`` ``unit`` (``mode`` "underlay" for node→node baselines)."""
        self.run.get_writer().record(
            name, value, unit, mode=mode or self.mode, scenario=self.scenario,
            threshold=threshold, comparison=comparison,
            labels={"test": self.test, **(labels or {})},
        )  # fmt: skip

    def timeline(
        self,
        name: str,
        events: Sequence[tuple[float, str]],
        samples: Sequence[tuple[float, float]] = (),
        sample_name: str = "",
        sample_unit: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.run.get_writer().timeline(
            name, mode=self.mode, events=events, samples=samples, sample_name=sample_name,
            sample_unit=sample_unit, scenario=self.scenario, labels=labels,
        )  # fmt: skip

    def fallback(self, name: str) -> None:
        self.run.get_writer().note_fallback(name)
