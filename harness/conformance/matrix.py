"""The mode matrix of a run and which test runs in which of its modes (the cover).

A matrix is a list of entries (``host-gw``, ``calico-vxlan+wireguard`` …) and a
selection policy:

- ``default`` (``make conformance``): every mode the agent implements plus
  WireGuard once per pod-interface family. Light tests run in every entry;
  heavy ones in the *cover*, the fewest entries that put every heavy test at
  least once into each mode family (bridged and routed pods, encapsulated and
  direct, encrypted and clear) where it applies; "once" tests in the first entry
  where they apply.
- ``full`` (``MATRIX=full``): every mode with and without WireGuard, and every
  test in every entry where it applies.
- an explicit list (``MODES=…``, ``--mode``) keeps the default policy over
  those entries, or the full one with ``--matrix full``.

Decisions are made before anything runs, from the catalogue (catalogue.py) and
the lab's shape; pure, so the plan printed at the start is the plan executed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

from harness.conformance.catalogue import Declared, LabShape
from harness.conformance.modes import ModeSpec, families
from harness.errors import UserError
from harness.plan.model import MODES

Policy = Literal["default", "full"]
State = Literal["run", "not-applicable", "not-selected"]
POLICIES: tuple[Policy, ...] = ("default", "full")
# WireGuard in the default matrix: once per pod-interface family, each on a
# different encapsulation, so "encrypted" meets bridged, routed, direct and
# encapsulated paths (docs/adr/0009-conformance-matrix-cover.md).
DEFAULT_ENCRYPTED = ("host-gw+wireguard", "calico-vxlan+wireguard")


@dataclass(frozen=True)
class Matrix:
    """The entries of a run, in order, and how tests are selected over them."""

    name: str  # "default", "full", or "custom" for an explicit list
    policy: Policy
    entries: tuple[ModeSpec, ...]

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(str(e) for e in self.entries)


def preset(name: str, modes: Sequence[str] = ()) -> Matrix:
    """The matrix called ``name`` ("default" or "full"), or ``modes`` under its policy."""
    if name not in POLICIES:
        raise UserError(f"--matrix {name!r}: unknown matrix (use one of: {', '.join(POLICIES)})")
    policy: Policy = "full" if name == "full" else "default"
    if modes:
        entries = tuple(dict.fromkeys(ModeSpec.parse(m) for m in modes))
        return Matrix("custom" if policy == "default" else "full", policy, entries)
    if policy == "full":
        texts = [m for m in MODES] + [f"{m}+wireguard" for m in MODES]
    else:
        texts = [*MODES, *DEFAULT_ENCRYPTED]
    return Matrix(name, policy, tuple(ModeSpec.parse(t) for t in texts))


def cover(
    candidates: Sequence[ModeSpec], extra: Callable[[ModeSpec], str] | None = None
) -> tuple[ModeSpec, ...]:
    """The fewest entries meeting every family present; among those, the earliest in order.

    Families are the values of the three axes (modes.AXES); a family no
    candidate belongs to cannot be covered and is not asked for. ``extra``: an
    axis of the scenario's own (the mesh's native or tunnel routing). Exact, not
    greedy: a matrix has at most a few dozen entries and six families, so the
    search stops at a cover of two or three.
    """

    def fams(c: ModeSpec) -> set[str]:
        return set(families(c)) | ({extra(c)} if extra else set())

    need = {f for c in candidates for f in fams(c)}
    for size in range(1, len(candidates) + 1):
        for combo in combinations(candidates, size):
            if need <= {f for c in combo for f in fams(c)}:
                return combo
    return ()


@dataclass(frozen=True)
class Decision:
    """Whether one test runs in one entry, and if not, why (a sentence for the report)."""

    state: State
    reason: str = ""


def decide(test: Declared, entry: ModeSpec, matrix: Matrix, lab: LabShape | None) -> Decision:
    """Run, not applicable (the catalogue's reason) or not selected (where it runs instead)."""
    reason = test.not_applicable(entry, lab)
    if reason:
        return Decision("not-applicable", reason)
    if matrix.policy == "full" or test.cost == "light":
        return Decision("run")
    where = selected_entries(test, matrix, lab)
    if entry in where:
        return Decision("run")
    what = "once per mode family" if test.cost == "heavy" else "once per run"
    hint = "MATRIX=full (--matrix full) runs it in every mode"
    return Decision("not-selected", f"{test.cost} check, run {what}: in {_join(where)}; {hint}")


def selected_entries(test: Declared, matrix: Matrix, lab: LabShape | None) -> tuple[ModeSpec, ...]:
    """The entries of ``matrix`` a test runs in under the matrix's policy."""
    applicable = [e for e in matrix.entries if test.not_applicable(e, lab) is None]
    if matrix.policy == "full" or test.cost == "light":
        return tuple(applicable)
    if test.cost == "once":
        return tuple(applicable[:1])
    return cover(applicable, test.scenario.extra_axis)


# Seconds per test and per entry, from the time table of the quiet default run of
# 2026-12-05 (single-cluster, 966 s): light checks 1.2-2.1 s each, heavy 3.5-5.3 s,
# once-per-run checks 20 s (31's rolling update 73 s, 32's autoscaler 40 s); an entry's
# switch, readiness wait and echo pods about 8 s. The old ratios (1, 6, 6) counted a
# once check like a heavy one, so the part with host-gw (every once check) ran about
# 570 s of tests against the other part's 330.
COST_UNITS = {"light": 1.4, "heavy": 4.5, "once": 20.0}
ENTRY_COST = 8.0


def split(matrix: Matrix, tests: Sequence[Declared], lab: LabShape | None, parts: int
          ) -> tuple[tuple[ModeSpec, ...], ...]:  # fmt: skip
    """The matrix's entries dealt into ``parts`` lists of about equal cost, each in matrix order.

    Decisions stay the whole matrix's (the cover is computed over every entry);
    each part is what one run, e.g. one per cluster, deploys and tests. The
    costliest entries are dealt first, each to the part with the least so far.
    Scenarios of scope ``lab`` (the mesh) are left out of the costs: no part runs them.
    """
    cost = {e: ENTRY_COST for e in matrix.entries}
    for test in tests:
        if test.scenario.scope == "lab":
            continue  # the whole lab's run does these, not a part (docs/adr/0018)
        for e in matrix.entries:
            if decide(test, e, matrix, lab).state == "run":
                cost[e] += COST_UNITS[test.cost]
    load = [0.0] * parts
    dealt: list[list[ModeSpec]] = [[] for _ in range(parts)]
    for e in sorted(matrix.entries, key=lambda e: -cost[e]):
        k = load.index(min(load))
        dealt[k].append(e)
        load[k] += cost[e]
    order = {e: i for i, e in enumerate(matrix.entries)}
    return tuple(tuple(sorted(d, key=order.__getitem__)) for d in dealt)


# Lockstep (docs/adr/0018-mesh-in-the-default-run.md, amendment): in a lab of several
# meshed clusters every matrix entry is a phase. The whole lab switches to it once, its
# cluster-scope scenarios are dealt between the clusters (every cluster runs the same
# mode, so any of them may run any in-cluster check) and its mesh checks run beside.

# Seconds of one scenario's checks in one entry where they run: the quiet two-cluster
# run of 2026-12-05 (20261205T095344Z, checks[].duration_s summed per scenario and entry,
# averaged over its entries). Only the ratios matter (the deal balances them); a
# scenario not measured there counts COST_UNITS of its cost.
SCENARIO_SECONDS: dict[int, float] = {
    1: 4.9, 2: 9.5, 3: 1.3, 4: 0.9, 5: 4.6, 6: 27.4, 7: 2.5, 8: 0.6, 9: 0.9, 10: 3.3,
    11: 3.4, 12: 2.7, 13: 42.0, 15: 5.3, 17: 25.0, 18: 6.6, 19: 2.0, 20: 15.3, 21: 60.8,
    23: 20.9, 28: 21.6, 29: 0.8, 30: 1.5, 31: 50.8, 32: 43.4, 33: 5.4, 36: 6.1,
    14: 0.0, 16: 0.0, 34: 0.0, 35: 0.0,  # no shipped suite test (a bench, or none)
    37: 0.0,  # VM labs only: a VM lab has one cluster, so nothing is dealt
}  # fmt: skip


def switch_cost(a: ModeSpec, b: ModeSpec) -> int:
    """How much a whole-lab switch from ``a`` to ``b`` changes, in rough units.

    A new mode restarts the agents (1); WireGuard on or off adds or removes a
    device and its keys on every node (1); a new pod interface family (bridged ↔
    routed) re-plumbs every pod (2); into or out of ``bgp`` the routers are
    re-deployed as well (1). Reasoned from what switch.yml does, not measured per
    pair: the switches of the last runs took 11–20 s whatever the pair.
    """
    fa, fb = families(a), families(b)
    cost = int(a.mode != b.mode) + int(a.encryption != b.encryption)
    cost += 2 * int(fa[0] != fb[0])
    cost += int((a.mode == "bgp") != (b.mode == "bgp"))
    return cost


def phases(matrix: Matrix) -> tuple[ModeSpec, ...]:
    """The order a lockstep run takes the matrix's entries in: the first entry (what the
    first deploy puts in place), then always the cheapest switch next (ties: matrix order).

    The order changes no decision (those are the whole matrix's, in matrix order).
    """
    left = list(matrix.entries[1:])
    order = list(matrix.entries[:1])
    while left:
        nxt = min(left, key=lambda e: switch_cost(order[-1], e))  # min keeps the first of ties
        order.append(nxt)
        left.remove(nxt)
    return tuple(order)


# Pairs (docs/adr/0018, amendment 8): in a lockstep run of two meshed clusters, two
# light entries run in one phase, one per cluster (each cluster all of its entry's
# in-cluster checks), after one switch that puts each cluster in its entry: a switch and
# a start-up fewer per pair. Which entries pair follows from their properties, never a list.


@dataclass(frozen=True)
class Phase:
    """One phase of a lockstep run: one entry for the whole lab, or a pair, one entry per
    cluster in the lab's cluster order (``why``: the pairing rule's reason)."""

    entries: tuple[ModeSpec, ...]
    why: str = ""

    @property
    def paired(self) -> bool:
        return len(self.entries) > 1

    def entry_of(self, index: int) -> ModeSpec:
        """The entry cluster number ``index`` (0-based) runs in this phase."""
        return self.entries[index] if self.paired else self.entries[0]

    def token(self, clusters: Sequence[str]) -> str:
        """What the script and ``podlab deploy --mode`` take: ``ENTRY``, or
        ``c1=ENTRY,c2=ENTRY`` for a pair."""
        if not self.paired:
            return str(self.entries[0])
        return ",".join(f"{c}={e}" for c, e in zip(clusters, self.entries, strict=True))

    def __str__(self) -> str:
        return " | ".join(map(str, self.entries))


def routing(entry: ModeSpec) -> str:
    """The mesh routing a cluster in ``entry`` uses (docs/mesh.md): native in bgp."""
    return "native" if entry.mode == "bgp" else "tunnel"


def unpairable(entry: ModeSpec, matrix: Matrix, lab: LabShape) -> str | None:
    """Why ``entry`` cannot share a phase with another (None: it is light and may): it
    starts a mesh run, a check other than a light one runs in it (a heavy or once-per-run
    check wants the machine's two clusters, or its time), or 23 is measured at the switch
    after it (its flows run in both clusters from one mode)."""
    from harness.conformance.catalogue import CATALOGUE, declare

    if mesh_runs(matrix, lab, entry):
        return "a mesh run"
    costly = sorted(
        n for n, s in CATALOGUE.items()
        if s.scope == "cluster" and s.cost != "light"
        and decide(declare(n), entry, matrix, lab).state == "run"
    )  # fmt: skip
    if costly:
        return "non-light checks " + _numbers(costly)
    return None


def pair_rule(a: ModeSpec, b: ModeSpec) -> str | None:
    """Why two light entries cannot run side by side in one mesh (None: they can): the
    mesh's rules (docs/mesh.md) want one routing and one encryption in every cluster."""
    if routing(a) != routing(b):
        return f"{routing(a)} and {routing(b)} routing"
    if a.encryption != b.encryption:
        return f"encryption {a.encryption} and {b.encryption}"
    return None


def phase_switch_cost(a: Phase, b: Phase, clusters: int) -> int:
    """A switch between phases: the costliest of the clusters' switches (one Ansible run
    switches them all at once)."""
    return max(switch_cost(a.entry_of(k), b.entry_of(k)) for k in range(clusters))


def lockstep_phases(matrix: Matrix, lab: LabShape | None) -> tuple[Phase, ...]:
    """The phases of a lockstep run: the entries in the cheapest switch order (``phases``)
    with light ones paired, one per cluster, in a lab of exactly two meshed clusters.

    Walking that order, each light entry (``unpairable`` None; never the first: the first
    deploy puts one mode everywhere) pairs with the next unpaired light entry it may share
    a mesh with (``pair_rule``); then the phases are ordered again, first phase first and
    always the cheapest switch next (``phase_switch_cost``). Any other lab, or a matrix
    with no two light entries that fit (MATRIX=full: every check everywhere), keeps one
    entry per phase.
    """
    order = phases(matrix)
    if lab is None or lab.clusters != 2 or not lockstep(lab):
        return tuple(Phase((e,)) for e in order)
    light = [e for e in order[1:] if unpairable(e, matrix, lab) is None]
    partner: dict[ModeSpec, ModeSpec] = {}
    for i, a in enumerate(light):
        if a in partner:
            continue
        for b in light[i + 1 :]:
            if b not in partner and pair_rule(a, b) is None:
                partner[a], partner[b] = b, a
                break
    units: list[Phase] = []
    for e in order:
        if e not in partner:
            units.append(Phase((e,)))
        elif order.index(e) < order.index(partner[e]):
            p = partner[e]
            why = (f"both light (no mesh run, light checks only), {routing(e)} routing, "
                   f"encryption {e.encryption}")  # fmt: skip
            units.append(Phase((e, p), why))
    ordered, left = units[:1], units[1:]
    while left:
        nxt = min(left, key=lambda u: phase_switch_cost(ordered[-1], u, lab.clusters))
        ordered.append(nxt)
        left.remove(nxt)
    return tuple(ordered)


# Scenario 23 (a mode switch under live flows) in a lockstep run: measured at the
# whole-lab switch after a phase where the matrix selects it (harness.conformance.switchflows),
# the switch the run makes anyway, in no cluster's share (docs/adr/0018, amendment 6).
AT_SWITCH = 23


def switch_flows(matrix: Matrix, lab: LabShape | None) -> tuple[ModeSpec, ...]:
    """The phases of a lockstep run after whose whole-lab switch scenario 23 is measured:
    those the matrix selects it in (default: the first; full: every one), but the last.
    A pair is never one (23 runs in no light entry's share): the switch after such a
    phase may lead into a pair, each cluster measured into its own entry."""
    from harness.conformance.catalogue import declare

    order = lockstep_phases(matrix, lab)
    return tuple(
        p.entries[0] for p in order[:-1]
        if not p.paired and decide(declare(AT_SWITCH), p.entries[0], matrix, lab).state == "run"
    )  # fmt: skip


def lockstep_decision(test: Declared, entry: ModeSpec, matrix: Matrix, lab: LabShape | None
                      ) -> Decision:  # fmt: skip
    """``decide`` for one phase's runs of a lockstep run: scenario 23, where the matrix
    selects it, is the whole-lab switch's after the phase (switch_flows), not a run's."""
    decision = decide(test, entry, matrix, lab)
    if test.scenario.number != AT_SWITCH or decision.state != "run":
        return decision
    last = lockstep_phases(matrix, lab)[-1]
    if not last.paired and entry == last.entries[0]:
        return Decision("not-applicable", f"{entry} is the last phase of the lockstep run: "
                        "no whole-lab switch after it to measure")  # fmt: skip
    return Decision("not-selected", "not selected in this run: measured at the whole-lab "
                    "switch after this phase (harness.conformance.switchflows)")  # fmt: skip


def scenario_seconds(number: int, cost: str) -> float:
    return SCENARIO_SECONDS.get(number, COST_UNITS[cost])


def deal(matrix: Matrix, lab: LabShape | None, entry: ModeSpec, parts: int
         ) -> tuple[tuple[int, ...], ...]:  # fmt: skip
    """The catalogue's cluster-scope scenarios dealt into ``parts`` shares for ``entry``.

    Every such scenario but 23 (AT_SWITCH: measured at the whole-lab switch, and
    recorded as such by the first share) is in exactly one share (one that does not run
    in this entry goes too: its share records why), and its tests stay together (they share module
    fixtures; a once-per-run check is in one cluster only). Quiet scenarios run alone
    whichever share has them (the quiet lock), so a phase lasts about their sum plus
    the largest share of the others: the others (SCENARIO_SECONDS, for those the
    matrix runs in ``entry``) are dealt first, costliest first, each to the share
    with the least so far; then the quiet ones the same way on the totals, so that
    no run sits idle long. Pure and deterministic: every run of a phase computes the
    same deal and takes its own share.
    """
    from harness.conformance.catalogue import CATALOGUE, declare

    costs: list[tuple[bool, float, int]] = []
    for number, s in CATALOGUE.items():
        if s.scope != "cluster" or number == AT_SWITCH:
            continue  # 23: the whole-lab switch's after the phase, no share's
        runs = decide(declare(number), entry, matrix, lab).state == "run"
        costs.append((s.quiet, scenario_seconds(number, s.cost) if runs else 0.0, number))
    load = [0.0] * parts
    shares: list[list[int]] = [[] for _ in range(parts)]
    for _quiet, seconds, number in sorted(costs, key=lambda c: (c[0], -c[1], c[2])):
        k = load.index(min(load))
        shares[k].append(number)
        load[k] += seconds
    return tuple(tuple(sorted(s)) for s in shares)


def deal_seconds(matrix: Matrix, lab: LabShape | None, entry: ModeSpec, share: Sequence[int]
                 ) -> float:  # fmt: skip
    """The estimated seconds of one share (what the plan prints beside it)."""
    from harness.conformance.catalogue import CATALOGUE, declare

    return sum(
        scenario_seconds(n, CATALOGUE[n].cost)
        for n in share
        if decide(declare(n), entry, matrix, lab).state == "run"
    )


def lockstep_lines(matrix: Matrix, lab: LabShape, clusters: Sequence[str]) -> list[str]:
    """The lockstep plan printed before a run: per phase, what each cluster runs (the
    scenarios that run in it there, with estimated seconds) and which mesh scenarios run;
    a pair's two entries, one per cluster, and why they pair."""
    from harness.conformance.catalogue import declare

    order, flows = lockstep_phases(matrix, lab), switch_flows(matrix, lab)
    pairs = sum(p.paired for p in order)
    lines = [
        f"lockstep: {len(order)} phases, each one whole-lab switch, then its checks "
        f"dealt between {', '.join(clusters)} and its mesh checks beside them, then a barrier"
        + (f"; {pairs} of them pairs: one light entry per cluster, each running all of its "
           "entry's checks" if pairs else "") + ":"
    ]  # fmt: skip
    for i, phase in enumerate(order, 1):
        # a pair: each cluster all of its own entry (named); else the entry dealt
        shares = None if phase.paired else deal(matrix, lab, phase.entries[0], len(clusters))
        cells = []
        for k, cluster in enumerate(clusters):
            entry = phase.entry_of(k)
            share = deal(matrix, lab, entry, 1)[0] if shares is None else shares[k]
            runs = [n for n in share if decide(declare(n), entry, matrix, lab).state == "run"]
            secs = deal_seconds(matrix, lab, entry, share)
            named = f" {entry}" if phase.paired else ""
            cells.append(f"{cluster}{named} {_numbers(runs)} (~{secs:.0f} s)")
        mesh = [] if phase.paired else mesh_runs(matrix, lab, phase.entries[0])
        then = ""
        if not phase.paired and phase.entries[0] in flows:
            then = f"; then 23 at the switch to {order[i]}"
        why = f"; paired: {phase.why}" if phase.paired else ""
        lines.append(f"  {i}. {phase!s:<24} {'; '.join(cells)}; mesh {_numbers(mesh)}{then}{why}")
    unpaired = [p.entries[0] for p in order[1:] if not p.paired]
    light = [e for e in unpaired if unpairable(e, matrix, lab) is None]
    if light and len(clusters) == 2:
        lines.append(f"  unpaired light: {_join(light)} (no light partner left with the "
                     "same routing and encryption)")  # fmt: skip
    return lines


def mesh_runs(matrix: Matrix, lab: LabShape, entry: ModeSpec) -> list[int]:
    """The whole-lab (mesh) scenarios that run in ``entry`` of a lockstep run; none: the
    phase starts no mesh run, its first cluster run records their decisions instead."""
    from harness.conformance.catalogue import CATALOGUE, declare

    return [
        n for n, s in CATALOGUE.items()
        if s.scope == "lab" and decide(declare(n), entry, matrix, lab).state == "run"
    ]  # fmt: skip


def _numbers(numbers: Sequence[int]) -> str:
    return ",".join(map(str, numbers)) or "-"


def _join(entries: Sequence[ModeSpec]) -> str:
    return ", ".join(str(e) for e in entries) or "no mode of this matrix"


def describe(matrix: Matrix, heavy: Sequence[ModeSpec]) -> list[str]:
    """The lines printed at the start of a run: entries with their families, and the cover."""
    lines = [f"matrix {matrix.name} ({matrix.policy} selection), {len(matrix.entries)} entries:"]
    for e in matrix.entries:
        mark = " [heavy checks]" if e in heavy and matrix.policy == "default" else ""
        lines.append(f"  {e!s:<24} {' · '.join(families(e))}{mark}")
    if matrix.policy == "default":
        lines.append(
            "cover: light checks run in every entry; heavy checks in "
            f"{_join(heavy)} (every mode family at least once); once-per-run checks in the "
            "first entry where they apply; MATRIX=full runs everything everywhere"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.conformance.matrix [--matrix M] [--mode X …] [--entries]``.

    Prints the matrix and its cover (what ``make conformance`` shows before it
    starts), or with ``--entries`` only the entries, one line, for scripts.
    """
    import argparse

    p = argparse.ArgumentParser(prog="python -m harness.conformance.matrix")
    p.add_argument("--matrix", default="default", choices=POLICIES)
    p.add_argument("--mode", action="append", default=[])
    p.add_argument("--entries", action="store_true")
    p.add_argument("--topology", help="also say where the lab's whole-lab (mesh) scenarios run")
    p.add_argument(
        "--phases", action="store_true",
        help="with --entries: in the lockstep run's phase order; with --topology too, the "
        "lab's phases: a pair of light entries, one per cluster, as CLUSTER=ENTRY,CLUSTER=ENTRY",
    )  # fmt: skip
    p.add_argument(
        "--mesh",
        action="store_true",
        help="with --phases and --topology: per phase 1 if its mesh run has a scenario "
        "to run, else 0",
    )
    p.add_argument(
        "--switch-flows", action="store_true",
        help="with --topology: the phases after whose switch scenario 23 is measured",
    )  # fmt: skip
    args = p.parse_args(argv)
    try:
        m = preset(args.matrix, args.mode)
        if args.switch_flows and not args.topology:
            raise UserError("--switch-flows needs --topology FILE (the lab's shape decides)")
        entries = phases(m) if args.phases else m.entries
        one_liner = args.switch_flows or (args.phases and (args.entries or args.mesh))
        if args.topology and one_liner:  # the script's one-liners
            from harness.plan.build import load_plan

            plan = load_plan(args.topology)
            lab = LabShape.of(plan)
            order = lockstep_phases(m, lab)
            if args.switch_flows:
                print(" ".join(map(str, switch_flows(m, lab))))
            elif args.mesh:
                print(" ".join(
                    str(int(not p.paired and bool(mesh_runs(m, lab, p.entries[0]))))
                    for p in order
                ))  # fmt: skip
            else:  # phase tokens: ENTRY, or c1=ENTRY,c2=ENTRY for a pair
                print(" ".join(p.token(list(plan.clusters)) for p in order))
            return 0
        lines = describe(m, cover(m.entries))
        if args.topology:
            lines += lab_lines(m, args.topology)
    except UserError as exc:
        print(f"podlab: {exc}")
        return 2
    print(" ".join(map(str, entries)) if args.entries else "\n".join(lines))
    return 0


def lockstep(lab: LabShape) -> bool:
    """Whether ``make conformance`` runs this lab in lockstep: its clusters form one mesh.

    Clusters in no mesh (or in several) keep ADR 0010's per-cluster runs: nothing
    ties their modes together.
    """
    return lab.clusters >= 2 and lab.meshed == lab.clusters


def lab_lines(matrix: Matrix, topology: str) -> list[str]:
    """Where the catalogue's whole-lab scenarios run in this lab (a test may narrow its
    own: the run's first lines say exactly), or why none applies."""
    from harness.conformance.catalogue import CATALOGUE, declare
    from harness.conformance.coverage import scope_lines
    from harness.plan.build import load_plan

    plan = load_plan(topology)
    lab = LabShape.of(plan)
    steps = lockstep_lines(matrix, lab, list(plan.clusters)) if lockstep(lab) else []
    where = {
        n: set(selected_entries(declare(n), matrix, lab))
        for n, s in CATALOGUE.items()
        if s.scope == "lab"
    }
    lines = scope_lines({n: e for n, e in where.items() if e}, matrix) + steps
    if lines or not where:
        return lines
    first = min(where)
    reason = declare(first).not_applicable(matrix.entries[0], lab)
    return [f"whole-lab (mesh) scenarios {first}-{max(where)}: not applicable ({reason})"]


if __name__ == "__main__":
    raise SystemExit(main())
