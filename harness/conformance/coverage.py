"""A run's plan: which collected test runs in which matrix entry, and what it covered.

The plugin calls ``plan_items`` once, after collection: every test marked
``scenario(N)`` gets a decision per entry (run, not applicable, not selected)
from the catalogue and the matrix; ``results_plan`` turns the matrix, its cover
and the catalogue into the results file's ``plan`` (the report's coverage table
reads it, and the terminal prints ``describe``'s lines at the start).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.conformance.catalogue import CATALOGUE, Declared, LabShape, Scenario, declare
from harness.conformance.matrix import Decision, Matrix, cover, decide
from harness.conformance.modes import ModeSpec, families
from harness.results.model import Plan, PlannedMode, PlannedScenario


def declared(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Declared:
    """A test's declaration from its ``scenario`` marker's arguments."""
    if not args or not isinstance(args[0], int):
        raise ValueError("mark a conformance test @pytest.mark.scenario(N), N its catalogue number")
    unknown = set(kwargs) - {"cost", "applies", "needs"}
    if unknown:
        raise ValueError(f"scenario({args[0]}): unknown argument(s) {', '.join(sorted(unknown))}")
    return declare(args[0], kwargs.get("cost"), kwargs.get("applies"), kwargs.get("needs"))


@dataclass(frozen=True)
class Planned:
    """One collected test in one matrix entry, and the decision about it."""

    test: str  # the check's name (the test id without the mode)
    entry: ModeSpec
    declared: Declared
    decision: Decision


def plan_items(
    items: Iterable[tuple[str, str, Declared]], matrix: Matrix, lab: LabShape | None
) -> list[Planned]:
    """Decide every (check name, entry text, declaration) of a collection."""
    return [
        Planned(name, spec, dec, decide(dec, spec, matrix, lab))
        for name, entry, dec in items
        for spec in (ModeSpec.parse(entry),)
    ]


def heavy_cover(matrix: Matrix) -> tuple[ModeSpec, ...]:
    """The cover of a heavy check that applies everywhere: the entries heavy checks gather in."""
    return matrix.entries if matrix.policy == "full" else cover(matrix.entries)


def results_plan(
    matrix: Matrix, planned: Iterable[Planned], mine: Iterable[ModeSpec] = (), cluster: str = ""
) -> Plan:
    """The results file's plan: entries and their families, the cover, the whole catalogue.

    ``mine``: the entries this run tests on ``cluster`` when the matrix is split.
    """
    tests = Counter(p.declared.scenario.number for p in planned if p.entry == matrix.entries[0])
    own = set(mine)
    return Plan(
        matrix=matrix.name,
        policy=matrix.policy,
        modes=tuple(
            PlannedMode(mode=str(e), families=families(e), cluster=cluster if e in own else "")
            for e in matrix.entries
        ),
        heavy_cover=tuple(str(e) for e in heavy_cover(matrix)),
        scenarios=tuple(_planned(s, tests[s.number]) for s in CATALOGUE.values()),
    )


def _planned(s: Scenario, tests: int) -> PlannedScenario:
    return PlannedScenario(
        number=s.number, title=s.title, cost=s.cost, scope=s.scope, tests=tests,
        elsewhere=s.elsewhere,
    )  # fmt: skip


def lab_scope_lines(planned: Iterable[Planned], matrix: Matrix) -> list[str]:
    """Where the scenarios that need the whole lab (the mesh) run: one line per set of
    entries, e.g. "24 in host-gw, bgp, calico-vxlan+wireguard" (24 also meets native
    routing), since they do not follow the heavy checks' cover line."""
    where: dict[int, set[ModeSpec]] = {}
    for p in planned:
        if p.declared.scenario.scope == "lab" and p.decision.state == "run":
            where.setdefault(p.declared.scenario.number, set()).add(p.entry)
    return scope_lines(where, matrix)


def scope_lines(where: Mapping[int, set[ModeSpec]], matrix: Matrix) -> list[str]:
    groups: dict[tuple[ModeSpec, ...], list[int]] = {}
    for number, entries in sorted(where.items()):
        key = tuple(e for e in matrix.entries if e in entries)
        groups.setdefault(key, []).append(number)
    parts = [
        f"{', '.join(map(str, numbers))} in {', '.join(map(str, entries))}"
        for entries, numbers in groups.items()
    ]
    return [f"whole-lab (mesh) scenarios: {'; '.join(parts)}"] if parts else []


def summary_lines(planned: list[Planned]) -> list[str]:
    """How many test runs each decision got: one line for the start of a run."""
    n = Counter(p.decision.state for p in planned)
    return [
        f"plan: {n['run']} test runs, {n['not-selected']} not selected in this matrix, "
        f"{n['not-applicable']} not applicable to their mode or lab"
    ]
