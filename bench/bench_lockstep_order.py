"""Replay one phase of a lockstep run under the quiet lock's rules and predict its wall.

``.venv/bin/python bench/bench_lockstep_order.py RESULTS_DIR [--entry host-gw]
[--order NAME ...]``

RESULTS_DIR is a lockstep run's results directory (``make conformance`` on a lab of
clusters in one mesh: per phase one results file per cluster run and one for the
mesh's run). For the phase of ``--entry`` (default: every phase) it takes, per run,
the checks that held the quiet lock (their ``labels.machine``), in the order they
ran, with their ``duration_s`` and, for a ``waits`` test, its ``machine_shared_s``
window; each check's claim is ``quiet.claim`` of its scenario's catalogue flag and
its test's ``breaks``/``waits`` markers (read from the suites' source). It then
replays the three runs, each starting after its recorded ``start-up``, through the
locks as quiet.py takes them — the quiet turn, the clusters by name, the machine;
each lock first come, first served (the turnstile), shared takers together, a
``waits`` test sharing the machine for its window and re-taking it through the
turnstile — and prints per run the predicted end and quiet wait against the
recorded ones, and the phase's wall (the latest run's end) against the script's
``phase`` timing.

``--order NAME`` replays the same checks in another order within each run (by their
suite's rank in that order, then as pytest collects them; ``ORDERS``): ``ran``
(as recorded), ``old`` (plugin.LOCKSTEP_ORDER before ADR 0018's amendment 7), ``new``
(plugin.LOCKSTEP_ORDER now) and the candidates weighed against it.

What it leaves out, so a prediction is a guide, not a measurement: a check's
duration is the recorded one whatever runs beside it (two cores: three ordinary
checks at once are slower than one alone, which the recorded figures carry only
for the order that ran); the gaps between checks are nil (a run's ``mode`` timing
is its checks' seconds plus its quiet wait to 0.1 s in the runs it was fitted on);
a window sits ``WINDOW_TAIL_S`` before its check's end. Asserts nothing.
"""

from __future__ import annotations

import argparse
import ast
import heapq
import json
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness.conformance import quiet  # noqa: E402
from harness.conformance.catalogue import CATALOGUE  # noqa: E402
from harness.conformance.plugin import LOCKSTEP_ORDER, MODULE_ORDER  # noqa: E402

SUITES = REPO / "harness" / "conformance" / "suites"
# Where a ``waits`` test's window ends, in seconds before the check's end: 13's node
# stop takes the machine back RETAKE_LEAD_S (10 s) before the verdict and judges the
# proxies for ≈ 2 s after it; 23 shares for its switch back, its last step.
WINDOW_TAIL_S = {
    "test_stopped_node_leaves_every_service": 12.0,
    "test_flows_survive_a_mode_switch": 1.0,
}


@dataclass(frozen=True)
class Marks:
    """What a suite says of one test function: its module and its markers."""

    module: str
    breaks: tuple[str, ...] | None = None
    waits: bool = False


@dataclass(frozen=True)
class Check:
    """One check of a run as the replay needs it."""

    name: str
    module: str
    seconds: float  # its own work (duration_s less a recorded re-take's wait)
    claim: quiet.Claim
    window: tuple[float, float] | None = None  # (seconds before it, seconds shared)


@dataclass
class RunSpec:
    """One run of a phase: its role (``cluster`` or ``lab``), when it starts its first
    check, its checks in order; the recorded figures to compare with."""

    name: str
    role: str
    start_s: float
    checks: list[Check]
    recorded_end_s: float = 0.0
    recorded_wait_s: float = 0.0


@dataclass
class Outcome:
    """A replay's prediction per run (end, quiet wait) and the phase's wall."""

    end_s: dict[str, float] = field(default_factory=dict)
    wait_s: dict[str, float] = field(default_factory=dict)
    # (run, check, asked, started, ended): when each check asked for its locks, had them
    # all, and let them go
    trace: list[tuple[str, str, float, float, float]] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return max(self.end_s.values(), default=0.0)


def suite_marks(suites: Path = SUITES) -> dict[str, Marks]:
    """Every test function of the suites: its module and its ``breaks``/``waits`` markers
    (pure over the source: nothing is imported)."""
    out: dict[str, Marks] = {}
    for path in sorted(suites.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            breaks, waits = None, False
            for dec in node.decorator_list:
                text = ast.unparse(dec)
                if text.startswith("pytest.mark.waits"):
                    waits = True
                if isinstance(dec, ast.Call) and text.startswith("pytest.mark.breaks"):
                    breaks = tuple(str(ast.literal_eval(a)) for a in dec.args)
            out[node.name] = Marks(path.stem, breaks, waits)
    return out


def base_name(check_name: str) -> str:
    return check_name.split("[", 1)[0]


def make_check(row: Mapping[str, object], cluster: str | None, clusters: Sequence[str],
               marks: Mapping[str, Marks]) -> Check:  # fmt: skip
    """A results file's check (``checks[]`` row) as the replay takes it."""
    name = str(row["name"])
    mark = marks.get(base_name(name), Marks("?"))
    scenario = CATALOGUE[int(str(row["scenario"]))]
    claim = quiet.claim(scenario.quiet, mark.breaks, cluster, clusters, clusters, mark.waits)
    labels = row.get("labels") or {}
    assert isinstance(labels, dict)
    seconds = float(str(row["duration_s"]))
    window = None
    shared = float(labels.get("machine_shared_s", 0) or 0)
    if shared:
        seconds -= float(labels.get("machine_retake_s", 0) or 0)
        tail = WINDOW_TAIL_S.get(base_name(name), 1.0)
        before = max(0.0, seconds - shared - tail)
        window = (before, shared)
    return Check(name, mark.module, seconds, claim, window)


def load_phase(results: Path, entry: str, marks: Mapping[str, Marks]) -> list[RunSpec]:
    """The runs of one phase: every results file with checks of ``entry`` that held the
    quiet lock. The lab's clusters are those the cluster runs name, taken as the mesh's
    in name order (two-clusters: c1, then c2)."""
    files = []
    for path in sorted(results.glob("*.json")):
        if "-switch-" in path.name:  # 23 at the whole-lab switch: between phases, not in one
            continue
        data = json.loads(path.read_text())
        checks = [c for c in data.get("checks", []) if c.get("mode") == entry
                  and "machine" in (c.get("labels") or {})]  # fmt: skip
        if checks:
            files.append((path, data, checks))
    clusters = sorted({str(c["labels"]["cluster"]) for _, _, cs in files for c in cs
                       if "cluster" in c["labels"]})  # fmt: skip
    runs = []
    for _path, data, checks in files:
        cluster = checks[0]["labels"].get("cluster")
        timing = {t["what"]: float(t["seconds"]) for t in data.get("timings", [])
                  if t.get("mode") in ("", entry)}  # fmt: skip
        start = timing.get("start-up", 0.0)
        run = RunSpec(cluster or "mesh", "cluster" if cluster else "lab", start,
                      [make_check(c, cluster, clusters, marks) for c in checks])  # fmt: skip
        run.recorded_end_s = start + timing.get("mode", 0.0)
        run.recorded_wait_s = timing.get("quiet wait", 0.0)
        runs.append(run)
    return runs


def phase_timing(results: Path, entry: str) -> float | None:
    """The script's ``phase ENTRY`` timing (the after-down file), if any."""
    for path in sorted(results.glob("*after-down.json")):
        for t in json.loads(path.read_text()).get("timings", []):
            if t.get("what") == f"phase {entry}":
                return float(t["seconds"])
    return None


class _Lock:
    """A flock lock behind its turnstile: takers queue first come, first served; the
    head is let in when it fits (shared beside shared, exclusive alone)."""

    def __init__(self) -> None:
        self.holders: dict[int, bool] = {}
        self.queue: deque[tuple[int, bool]] = deque()

    def fits(self, exclusive: bool) -> bool:
        return not self.holders if exclusive else not any(self.holders.values())


def replay(runs: Sequence[RunSpec]) -> Outcome:
    """The phase as the locks would let it run (pure: no clock, no files)."""
    locks: dict[str, _Lock] = {}
    events: list[tuple[float, int, int, str]] = []
    seq = 0
    out = Outcome()
    pos = [0] * len(runs)  # the check each run is at
    need: list[list[tuple[str, bool]]] = [[] for _ in runs]  # locks it still asks for
    held: list[list[str]] = [[] for _ in runs]
    asked = [0.0] * len(runs)
    waited = [0.0] * len(runs)
    began = [0.0] * len(runs)

    def at(t: float, i: int, step: str) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, i, step))

    def grant(name: str, t: float) -> None:
        lock = locks[name]
        while lock.queue and lock.fits(lock.queue[0][1]):
            i, exclusive = lock.queue.popleft()
            lock.holders[i] = exclusive
            at(t, i, "granted")

    def claim_locks(c: Check) -> list[tuple[str, bool]]:
        wanted = [("turn", True)] if c.claim.turn else []
        for cluster in sorted({*c.claim.shared, *c.claim.broken}):
            wanted.append((f"cluster:{cluster}", cluster in c.claim.broken))
        return [*wanted, ("machine", c.claim.exclusive)]

    for i, run in enumerate(runs):
        at(run.start_s, i, "next")
    while events:
        t, _, i, step = heapq.heappop(events)
        run = runs[i]
        if step == "next":
            if pos[i] >= len(run.checks):
                out.end_s[run.name] = t
                out.wait_s[run.name] = waited[i]
                continue
            need[i] = claim_locks(run.checks[pos[i]])
            asked[i] = t
            step = "granted"
            held[i] = []
        check = run.checks[pos[i]] if pos[i] < len(run.checks) else None
        if step == "granted":
            if held[i] and held[i][-1] == "retake":  # the machine is ours again
                held[i].pop()
                at(t, i, "post")
                continue
            while need[i]:
                name, exclusive = need[i][0]
                lock = locks.setdefault(name, _Lock())
                if i in lock.holders:  # just granted
                    need[i].pop(0)
                    held[i].append(name)
                    continue
                if lock.queue or not lock.fits(exclusive):
                    lock.queue.append((i, exclusive))
                    break  # waits; "granted" comes back when it is let in
                lock.holders[i] = exclusive
            if need[i]:
                continue
            waited[i] += t - asked[i]
            assert check is not None
            began[i] = t
            if check.window is not None and check.claim.exclusive:
                at(t + check.window[0], i, "share")
            else:
                at(t + check.seconds, i, "done")
        elif step == "share":
            assert check is not None and check.window is not None
            locks["machine"].holders[i] = False
            grant("machine", t)
            at(t + check.window[1], i, "retake")
        elif step == "retake":
            machine = locks["machine"]
            del machine.holders[i]  # flock converts by letting go first
            if machine.queue or not machine.fits(True):
                held[i].append("retake")
                machine.queue.append((i, True))
            else:
                machine.holders[i] = True
                at(t, i, "post")
        elif step == "post":
            assert check is not None and check.window is not None
            at(t + max(0.0, check.seconds - sum(check.window)), i, "done")
        elif step == "done":
            for name in held[i]:
                del locks[name].holders[i]
            for name in held[i]:
                grant(name, t)
            held[i] = []
            assert check is not None
            out.trace.append((run.name, check.name, asked[i], began[i], t))
            pos[i] += 1
            at(t, i, "next")
    return out


def reorder(run: RunSpec, rank: Callable[[str, str], int]) -> RunSpec:
    """The run with its checks in the order the plugin would give them under ``rank``:
    by their suite's rank for the run's role, then as pytest collects them (suites by
    file name; a suite's tests as they ran)."""
    position = {id(c): i for i, c in enumerate(run.checks)}
    checks = sorted(run.checks, key=lambda c: (rank(c.module, run.role), c.module, position[id(c)]))
    return RunSpec(run.name, run.role, run.start_s, checks, run.recorded_end_s,
                   run.recorded_wait_s)  # fmt: skip


def by_rank(
    cluster: Mapping[str, int], lab: Mapping[str, int] | None = None
) -> Callable[[str, str], int]:
    """An order as ``reorder`` takes it: a suite's rank in a cluster run and (if given
    apart) in the mesh's run; a suite not named ranks 5, as in the plugin."""
    return lambda module, role: (lab if role == "lab" and lab else cluster).get(module, 5)


# plugin.LOCKSTEP_ORDER until amendment 7 of ADR 0018: the quiet-only suites after the
# others, the suites mixing ordinary and quiet checks (services, policy) among the others.
OLD_LOCKSTEP_ORDER = {**MODULE_ORDER, "test_latency": 6, "test_throughput": 6, "test_slo": 7}
# Candidates weighed against it (ADR 0018, amendment 7): in the cluster runs the quiet-only
# suites first (they take their turns while the mesh run does its ordinary checks); in the
# mesh's run 26 first (its cycles hold only c1 alone, so c2's ordinary checks go on).
_QUIET_FIRST = {**MODULE_ORDER, "test_latency": -3, "test_throughput": -3, "test_slo": -2}
_MESH_26_FIRST = {**OLD_LOCKSTEP_ORDER, "test_mesh_failover": -1}
ORDERS: dict[str, Callable[[str, str], int] | None] = {
    "ran": None,
    "old": by_rank(OLD_LOCKSTEP_ORDER),
    "new": by_rank(LOCKSTEP_ORDER),
    "mesh-26-first": by_rank(OLD_LOCKSTEP_ORDER, _MESH_26_FIRST),
    "clusters-quiet-first": by_rank(_QUIET_FIRST, OLD_LOCKSTEP_ORDER),
    "quiet-first+26-first": by_rank(_QUIET_FIRST, _MESH_26_FIRST),
    "new+26-first": by_rank(LOCKSTEP_ORDER, {**LOCKSTEP_ORDER, "test_mesh_failover": -1}),
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--entry", action="append", default=[], help="a phase (default: all)")
    ap.add_argument("--order", action="append", default=[], choices=list(ORDERS))
    ap.add_argument("--trace", action="store_true", help="every check's ask, start and end")
    args = ap.parse_args(argv)
    if not args.results.is_dir():
        print(f"bench_lockstep_order: {args.results}: not a results directory", file=sys.stderr)
        return 2
    marks = suite_marks()
    entries = args.entry
    if not entries:
        seen: dict[str, None] = {}
        for path in sorted(args.results.glob("*.json")):
            for c in json.loads(path.read_text()).get("checks", []):
                if "machine" in (c.get("labels") or {}):
                    seen.setdefault(str(c["mode"]))
        entries = list(seen)
    for entry in entries:
        runs = load_phase(args.results, entry, marks)
        if not runs:
            print(f"bench_lockstep_order: no checks of {entry} under the quiet lock in "
                  f"{args.results}", file=sys.stderr)  # fmt: skip
            return 2
        recorded = phase_timing(args.results, entry)
        rec = f"{recorded:.1f} s" if recorded is not None else "?"
        print(f"== {entry}: recorded phase {rec}; per run recorded end / quiet wait")
        for run in runs:
            print(f"   {run.name:5} {run.recorded_end_s:6.1f} s / {run.recorded_wait_s:6.1f} s")
        for name in args.order or ["ran", "old", "new"]:
            rank = ORDERS[name]
            got = replay([reorder(r, rank) if rank else r for r in runs])
            per = ", ".join(f"{r.name} {got.end_s[r.name]:.1f}/{got.wait_s[r.name]:.1f}"
                            for r in runs)  # fmt: skip
            print(f"   {name:22} predicted {got.wall_s:6.1f} s ({per})")
            if args.trace:
                for who, check, asked, began, ended in sorted(got.trace, key=lambda x: x[3]):
                    print(f"      {began:6.1f}-{ended:6.1f} (asked {asked:6.1f}) {who:4} {check}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
