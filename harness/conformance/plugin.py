"""podlab's pytest plugin (entry point ``pytest11: podlab``): options, mode matrix, results.

Options: ``--lab NAME`` (test a lab that is up), ``--topology FILE`` (build,
deploy, test and remove one), ``--matrix default|full`` and ``--mode MODE``
(repeatable: the matrix's entries; without either, the lab's own mode;
``MODE+wireguard`` adds encryption), ``--results DIR``, ``--keep-lab``,
``--thorough``, ``--tput-rounds``, ``--tput-seconds``. Every test marked
``@pytest.mark.scenario(N)`` becomes a check in the results file (scenario,
mode, outcome, the assertion's message, the time it took); ``record`` adds
measurements. Before anything runs, each such test is
decided per matrix entry from the catalogue (catalogue.py, matrix.py): run, or
recorded as "not applicable" or "not selected" with the reason and not run at all.
The plugin is inert in sessions that collect no such test, so podlab's own test
run is unaffected by it.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.conformance import coverage, fixtures
from harness.conformance.catalogue import NOT_APPLICABLE, Declared, LabShape
from harness.conformance.fixtures import (  # noqa: F401  (fixtures this plugin provides)
    RUN_KEY,
    echo_pods,
    get_run,
    lab,
    mode,
    module_pod_factory,
    nodes,
    pod_factory,
    podlab_run,
    quiet_lock,
    record,
    thorough,
)
from harness.conformance.matrix import (
    AT_SWITCH,
    POLICIES,
    Matrix,
    deal,
    lockstep_decision,
    phases,
    preset,
    split,
)
from harness.conformance.modes import ModeSpec
from harness.conformance.run import Options, Run
from harness.errors import PodlabError
from harness.plan.model import LabPlan
from harness.results.model import Outcome

_SPENT = pytest.StashKey[float]()  # seconds a test took so far (setup, call)
_QUIET = pytest.StashKey[bool]()  # the test's scenario is a quiet one (catalogue)
_OUTCOME = pytest.StashKey[tuple[Outcome, str]]()
_BREAKS = pytest.StashKey[tuple[str, ...] | None]()  # the test's ``breaks`` marker's roles
_WAITS = pytest.StashKey[bool]()  # the test is marked ``waits``
# the lab's clusters and its mesh's (in the mesh's order), for the quiet lock's claims
_CLUSTERS = pytest.StashKey[tuple[tuple[str, ...], tuple[str, ...]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("podlab", "podlab conformance")
    g.addoption("--lab", metavar="NAME", help="test this lab, which is up and deployed")
    g.addoption("--topology", metavar="FILE", type=Path,
                help="bring up and deploy this topology's lab, test it, tear it down")  # fmt: skip
    g.addoption("--mode", action="append", default=[], metavar="MODE", dest="podlab_modes",
                help="datapath mode to test (repeatable: the matrix; MODE+wireguard "
                "encrypts); the lab is re-deployed per mode")  # fmt: skip
    g.addoption("--matrix", choices=POLICIES, default=None,
                help="default: every mode, light checks everywhere and heavy ones once per "
                "mode family; full: every mode with and without WireGuard, every check in "
                "every mode (with --mode: that policy over the modes given)")  # fmt: skip
    g.addoption("--cluster", metavar="NAME",
                help="test only this cluster of the lab (deploys, waits and suites touch "
                "no other), so that runs for different clusters can share a lab")  # fmt: skip
    g.addoption("--scope", choices=("cluster", "lab"), default=None,
                help="only scenarios of this scope (catalogue): per cluster, or those "
                "that need the whole lab (the mesh); default both")  # fmt: skip
    g.addoption("--part", metavar="K/N",
                help="run the K-th of N parts of the matrix (entries dealt by cost); "
                "decisions stay the whole matrix's")  # fmt: skip
    g.addoption("--entry", metavar="MODE",
                help="lockstep: run only this entry of the matrix (decisions stay the whole "
                "matrix's); the lab already runs it")  # fmt: skip
    g.addoption("--deal", metavar="K/N",
                help="lockstep: only the K-th of N shares of the entry's cluster-scope "
                "scenarios, dealt by measured seconds (matrix.deal)")  # fmt: skip
    g.addoption("--ssh-keep", metavar="ROLE",
                help="lockstep: keep the ssh masters in this role's directory of the lab "
                "for its next phase (closed by scripts/conformance.sh at the end)")  # fmt: skip
    g.addoption("--lab-decisions", action="store_true",
                help="lockstep, with --scope cluster: also record the entry's whole-lab "
                "scenarios, none of which runs in it (no mesh run is started)")  # fmt: skip
    g.addoption("--quiet-lock", metavar="FILE", type=Path,
                help="take turns with other runs on this lock: quiet checks (throughput, "
                "latency, SLOs) hold it alone, the others shared")  # fmt: skip
    g.addoption("--results", metavar="DIR", type=Path, help="write results JSON here")
    g.addoption("--keep-lab", action="store_true", help="leave a lab built by --topology up")
    g.addoption("--thorough", action="store_true",
                help="more pods, streams and seconds (slower, steadier figures)")  # fmt: skip
    g.addoption("--tput-rounds", type=int, default=5, metavar="N",
                help="interleaved rounds of the mode / hand-built / underlay throughput "
                "comparison (default: 5)")  # fmt: skip
    g.addoption("--tput-seconds", type=int, default=0, metavar="S",
                help="seconds of each iperf3 run in those rounds (default: 1, 3 with "
                "--thorough)")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "scenario(n): the CONFORMANCE.md scenario number a test checks"
    )
    config.addinivalue_line(
        "markers",
        "breaks(*roles): a quiet scenario's test that breaks these clusters of the mesh "
        "(local, remote) or times their agents, but measures nothing a busy neighbour "
        "distorts at its goals: it holds them alone and the machine shared "
        "(harness/conformance/quiet.py)",
    )
    config.addinivalue_line(
        "markers",
        "waits: a quiet scenario's test with parts that only wait on a timer or an event "
        "whose deadline dwarfs what load adds: it holds its clusters alone and may let the "
        "machine be shared for those parts (the quiet_lock fixture's shared(); "
        "harness/conformance/quiet.py)",
    )
    opts = Options(
        lab=config.getoption("--lab"),
        topology=config.getoption("--topology"),
        modes=tuple(config.getoption("podlab_modes") or ()),
        matrix=config.getoption("--matrix"),
        cluster=config.getoption("--cluster"),
        part=_part(config.getoption("--part")),
        entry=config.getoption("--entry"),
        deal=_part(config.getoption("--deal"), "--deal"),
        scope=config.getoption("--scope"),
        quiet_lock=config.getoption("--quiet-lock"),
        ssh_keep=_role(config.getoption("--ssh-keep")),
        lab_decisions=bool(config.getoption("--lab-decisions")),
        results=config.getoption("--results"),
        keep_lab=bool(config.getoption("--keep-lab")),
        thorough=bool(config.getoption("--thorough")),
    )
    run = Run(opts)
    try:
        for text in opts.modes:
            ModeSpec.parse(text)
        if opts.matrix or len(opts.modes) > 1:
            run.matrix = preset(opts.matrix or "default", opts.modes)
            run.options.modes = run.matrix.modes
    except PodlabError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[RUN_KEY] = run


def _role(text: str | None) -> str | None:
    """``--ssh-keep``'s role: a short name (a directory of the lab), else a usage error."""
    if text is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,15}", text):
        raise pytest.UsageError(f"--ssh-keep {text!r}: name the role in a-z, 0-9 and '-' "
                                "(at most 16 characters), e.g. --ssh-keep c1")  # fmt: skip
    return text


def _part(text: str | None, option: str = "--part") -> tuple[int, int] | None:
    """ "2/3" → (2, 3); a bad value is a usage error naming the fix."""
    if text is None:
        return None
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise pytest.UsageError(f"{option} {text!r}: write K/N with 1 <= K <= N, e.g. {option} 1/2")
    return int(k), int(n)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that (directly or not) uses our ``mode`` fixture over the matrix.

    Our ``mode`` always brings ``lab`` along; a test with a ``mode`` of its own
    (a parametrize argument, or another plugin's fixture) is left alone, since
    the plugin is loaded into every pytest session through its entry point.
    """
    if "mode" not in metafunc.fixturenames or not _ours(metafunc, "lab"):
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if "mode" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return
    run = get_run(metafunc.config)
    if run.matrix is None:
        modes = list(run.options.modes) or [_default_mode(run)]
        if modes == [NO_LAB]:  # refused with a usage error once collection is done
            metafunc.parametrize("mode", modes, indirect=True, scope="session")
            return
        run.matrix = Matrix("custom", "default", tuple(ModeSpec.parse(m) for m in modes))
    metafunc.parametrize("mode", list(run.matrix.modes), indirect=True, scope="session")


def _ours(holder: Any, name: str) -> bool:
    """Whether fixture ``name`` resolves to this plugin's (not a same-named one of a test suite).

    ``holder`` is a Metafunc or an item's fixture info; both map names to fixture
    definitions (pytest internals, read defensively).
    """
    defs = getattr(holder, "_arg2fixturedefs", None) or getattr(holder, "name2fixturedefs", None)
    chosen: Sequence[Any] = (defs or {}).get(name) or ()
    return bool(chosen) and getattr(chosen[-1].func, "__module__", "") == fixtures.__name__


def _default_mode(run: Run) -> str:
    """The lab's own mode: its agents' (when it is up) or its topology's."""
    from harness.conformance import labctl

    try:
        if run.options.lab:
            return str(labctl.current_mode(labctl.attach(run.options.lab)))
        if run.options.topology:
            from harness.plan.build import load_plan

            plan = load_plan(run.options.topology)
            cluster = next(iter(plan.clusters.values()))
            return str(ModeSpec(cluster.mode, cluster.encryption))
    except PodlabError as exc:
        raise pytest.UsageError(f"podlab: {exc}") from exc
    return NO_LAB


NO_LAB = "lab-default"


# Suites run in this order within each mode: traffic first, then SLOs, then hygiene
# (before faults, whose provoked errors must not count), then fault injection.
MODULE_ORDER = {
    "test_connectivity": 0, "test_mtu": 1, "test_latency": 2, "test_throughput": 3,
    "test_slo": 4, "test_hygiene": 8, "test_faults": 9, "test_bgp": 9, "test_modeswitch": 10,
    "test_mesh_failover": 9,  # cuts links and stops an etcd: after hygiene
}  # fmt: skip
# One phase of a lockstep run (--entry): the suites whose every check is ordinary first,
# then the two that mix ordinary and quiet checks (13 among the services, 18 among the
# policies), then those whose every check is quiet, still before hygiene and the faults.
# So the three runs of a phase do their ordinary checks at once at its start, and no
# quiet check takes its turn while another run still has ordinary ones to overlap: the
# quiet ones then take turns back to back (docs/adr/0018-mesh-in-the-default-run.md,
# amendment 7; bench/bench_lockstep_order.py replays a phase under either order). A
# suite keeps its tests together (module fixtures) and in its file's order.
LOCKSTEP_ORDER = {
    **MODULE_ORDER, "test_policy": 6, "test_services": 6, "test_latency": 7,
    "test_throughput": 7, "test_slo": 8, "test_hygiene": 9, "test_faults": 10, "test_bgp": 10,
    "test_mesh_failover": 10, "test_modeswitch": 11,
}  # fmt: skip


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse suites without a lab; keep pytest's grouping by mode, order suites by MODULE_ORDER."""
    run = get_run(config)
    wants_lab = any(_ours(getattr(item, "_fixtureinfo", None), "lab") for item in items)
    if wants_lab and not (run.options.lab or run.options.topology):
        raise pytest.UsageError(
            "podlab suites need a lab: pass --lab NAME (a lab that is up and deployed) "
            "or --topology FILE (built, deployed and removed by the run)"
        )
    if run.options.lab and run.options.topology:
        raise pytest.UsageError("give --lab or --topology, not both")
    _select(config, run, items)  # may move the entry the lab already runs first
    modes = list(run.options.modes)
    order = MODULE_ORDER if run.options.entry is None else LOCKSTEP_ORDER

    def key(item: pytest.Item) -> tuple[int, int]:
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get("mode") if callspec else None
        mode_rank = modes.index(param) if param in modes else (0 if param else -1)
        module = getattr(getattr(item, "module", None), "__name__", "").rsplit(".", 1)[-1]
        return mode_rank, order.get(module, 5)

    items.sort(key=key)


def _module(item: pytest.Item) -> str:
    return getattr(getattr(item, "module", None), "__name__", "").rsplit(".", 1)[-1]


def _lab_plan(run: Run) -> LabPlan | None:
    """The lab's plan, whose shape the catalogue's lab rules judge (None when no lab
    is named)."""
    from harness.conformance import labctl
    from harness.plan.build import load_plan

    try:
        if run.options.lab:
            plan = labctl.attach(run.options.lab).plan
        elif run.options.topology:
            plan = load_plan(run.options.topology)
        else:
            return None
    except PodlabError as exc:
        raise pytest.UsageError(f"podlab: {exc}") from exc
    cluster = run.options.cluster
    if cluster is not None and cluster not in plan.clusters:
        names = ", ".join(plan.clusters) or "none"
        raise pytest.UsageError(f"--cluster {cluster}: lab {plan.name} has no such cluster "
                                f"({names})")  # fmt: skip
    return plan


def _select(config: pytest.Config, run: Run, items: list[pytest.Item]) -> None:
    """Decide every scenario test per matrix entry; record and deselect what does not run.

    What is not applicable or not selected never reaches a fixture: it becomes
    a check with that outcome and its reason, and pytest reports it deselected.
    """
    marked = []
    for item in items:
        marker = item.get_closest_marker("scenario")
        callspec = getattr(item, "callspec", None)
        if marker is None:
            continue
        if callspec is None or "mode" not in callspec.params:
            if "lab" in getattr(item, "fixturenames", ()):
                raise pytest.UsageError(
                    f"{item.nodeid}: a scenario test on a lab must take the `mode` fixture "
                    "(add `mode: str` to its arguments), or it runs outside the matrix"
                )
            continue
        try:
            dec = coverage.declared(marker.args, marker.kwargs)
        except (KeyError, ValueError) as exc:
            raise pytest.UsageError(f"{item.nodeid}: {exc}") from exc
        marked.append((item, dec))
        item.stash[_QUIET] = dec.scenario.quiet
        item.stash[_BREAKS] = _breaks(item)
        item.stash[_WAITS] = item.get_closest_marker("waits") is not None
        if item.stash[_WAITS] and item.stash[_BREAKS] is not None:
            raise pytest.UsageError(f"{item.nodeid}: marked breaks and waits; one of them")
    if not marked or run.matrix is None:
        return
    from harness.conformance import labctl

    plan = _lab_plan(run)
    shape = LabShape.of(plan, labctl.backend(plan.name)) if plan is not None else None
    if plan is not None:
        from harness.conformance.meshsvc import plan_mesh_clusters

        config.stash[_CLUSTERS] = (tuple(plan.clusters), tuple(plan_mesh_clusters(plan)))
    planned = coverage.plan_items(
        [(_check_name(i), str(i.callspec.params["mode"]), d) for i, d in marked],  # type: ignore[attr-defined]
        run.matrix, shape,
    )  # fmt: skip
    per_test = {_check_name(i): d for i, d in marked}  # one declaration per test, not per entry
    mine = _my_part(run, list(per_test.values()), shape)
    share = _my_share(run, shape, mine)
    if run.options.entry is not None:  # lockstep: 23 is the whole-lab switch's (switchflows)
        planned = [
            replace(p, decision=lockstep_decision(p.declared, p.entry, run.matrix, shape))
            for p in planned
        ]
    takes = share
    if share is not None and run.options.deal is not None and run.options.deal[0] == 1:
        takes = (*share, AT_SWITCH)  # 23 is in no share: the first records its decision
    where = run.options.cluster or ""
    if run.options.deal is not None and run.options.deal[1] > 1 and plan is not None:
        where = "+".join(plan.clusters)  # the entry's checks are dealt between them
    # (--deal 1/1: a pair's phase, the entry's checks all in this cluster, matrix.Phase)
    run.get_writer().set_plan(coverage.results_plan(run.matrix, planned, mine, where))
    dropped, elsewhere = [], []
    scope = run.options.scope
    also = _also_recorded(run)
    for (item, _), p in zip(marked, planned, strict=True):
        s = p.declared.scenario
        dealt_away = takes is not None and s.scope == "cluster" and s.number not in takes
        if p.entry not in mine or (scope and s.scope not in (scope, also)) or dealt_away:
            elsewhere.append(item)  # another run (part, share or scope) decides and records it
            continue
        if p.decision.state == "run" and s.scope == also:
            raise pytest.UsageError(
                f"--lab-decisions: scenario {s.number} ({p.test}) runs in {p.entry}; "
                "start the whole-lab run (--scope lab) for this entry instead"
            )
        if p.decision.state == "run":
            continue
        dropped.append(item)
        run.check(p.declared.scenario.number, p.test, str(p.entry), p.decision.state,
                  p.decision.reason, 0.0)  # fmt: skip
    if dropped or elsewhere:
        gone = set(map(id, dropped + elsewhere))
        items[:] = [i for i in items if id(i) not in gone]
        config.hook.pytest_deselected(items=dropped + elsewhere)
    from harness.conformance.matrix import describe

    if run.options.entry is not None:  # one phase of a lockstep run: the script printed the plan
        what = "scenarios " + (", ".join(map(str, share)) if share else "none")
        if share is None:
            what = f"scope {run.options.scope}" if run.options.scope else "every scenario"
        k, n = run.options.deal or (1, 1)
        on = f" on cluster {run.options.cluster}" if run.options.cluster else " on the whole lab"
        run_n = sum(1 for p in planned if p.entry in mine and p.decision.state == "run")
        mesh = "; the whole-lab scenarios' decisions recorded here (none runs)" if also else ""
        fixtures.say(config, f"lockstep {mine[0]}, share {k}/{n}{on}: {what} "
                     f"({len(items)} of the entry's {run_n} test runs here){mesh}")  # fmt: skip
        return
    lines = describe(run.matrix, coverage.heavy_cover(run.matrix))
    if run.options.part:
        k, n = run.options.part
        where = f" on cluster {run.options.cluster}" if run.options.cluster else ""
        lines.append(f"part {k}/{n}{where}: {', '.join(map(str, mine))}")
    lines += coverage.lab_scope_lines(planned, run.matrix)
    fixtures.say(config, "\n".join(lines + coverage.summary_lines(planned)))


def _also_recorded(run: Run) -> str | None:
    """With ``--lab-decisions``: "lab", the scope whose decisions this cluster run records
    besides its own (a lockstep phase that starts no mesh run); a usage error elsewhere."""
    if not run.options.lab_decisions:
        return None
    if run.options.scope != "cluster" or run.options.entry is None:
        raise pytest.UsageError("--lab-decisions goes with --scope cluster and --entry MODE")
    return "lab"


def _breaks(item: pytest.Item) -> tuple[str, ...] | None:
    """The roles of the test's ``breaks`` marker (None: unmarked); an unknown role is a
    usage error naming the test."""
    from harness.conformance import quiet

    marker = item.get_closest_marker("breaks")
    if marker is None:
        return None
    roles = tuple(str(a) for a in marker.args)
    unknown = [r for r in roles if r not in quiet.ROLES]
    if unknown or marker.kwargs:
        raise pytest.UsageError(
            f"{item.nodeid}: breaks({', '.join(unknown) or 'keyword arguments'}): name roles "
            f"of the mesh ({', '.join(quiet.ROLES)})"
        )
    return roles


def _my_share(run: Run, shape: LabShape | None, mine: Sequence[ModeSpec]) -> tuple[int, ...] | None:
    """With ``--deal K/N``: the cluster-scope scenarios this run takes in its one entry."""
    if run.options.deal is None:
        return None
    assert run.matrix is not None
    if len(mine) != 1:
        raise pytest.UsageError("--deal K/N needs --entry MODE: a share is of one entry's checks")
    k, n = run.options.deal
    return deal(run.matrix, shape, mine[0], n)[k - 1]


def _my_part(run: Run, tests: list[Declared], shape: LabShape | None) -> tuple[ModeSpec, ...]:
    """This run's entries: its part of the matrix (``--part``), else all of them, the entry
    the lab already runs first (``starting_first``); with ``--entry`` that one entry."""
    assert run.matrix is not None
    mine = run.matrix.entries
    if run.options.entry is not None:
        try:
            entry = ModeSpec.parse(run.options.entry)
        except PodlabError as exc:
            raise pytest.UsageError(str(exc)) from exc
        if entry not in mine:
            raise pytest.UsageError(
                f"--entry {entry}: not an entry of matrix {run.matrix.name} "
                f"({', '.join(run.matrix.modes)})"
            )
        # the switch test's "next mode" is the next phase's (matrix.phases)
        run.options.modes = tuple(str(e) for e in phases(run.matrix))
        return (entry,)
    if run.options.part is not None:
        k, n = run.options.part
        mine = split(run.matrix, tests, shape, n)[k - 1]
    mine = starting_first(mine, _running_entry(run))
    run.options.modes = tuple(str(e) for e in mine)  # the switch test's "next mode" is ours
    return mine


def starting_first(entries: Sequence[ModeSpec], running: ModeSpec | None) -> tuple[ModeSpec, ...]:
    """``entries`` with ``running`` (the mode the run's clusters are in) moved to the front.

    Which entry a check runs in is decided over the whole matrix, so the order a
    run takes its entries in changes no decision; starting with the mode the lab
    already runs saves a switch (in ``make conformance``, the mesh phase leaves
    both clusters in its last entry, which one cluster's part then begins with).
    """
    if running is None or running not in entries:
        return tuple(entries)
    return (running, *(e for e in entries if e != running))


def _running_entry(run: Run) -> ModeSpec | None:
    """The one mode every cluster of the run (``--cluster``, else all) reports, if any.

    Only for a lab that is up (``--lab``); None when the clusters disagree or their
    etcd cannot tell (the run then keeps the matrix's order).
    """
    from harness.conformance import labctl

    if not run.options.lab:
        return None
    try:
        lab = labctl.attach(run.options.lab)
        clusters = [run.options.cluster] if run.options.cluster else list(lab.plan.clusters)
        running = {labctl.current_mode(lab, c) for c in clusters}
    except PodlabError:
        return None
    return running.pop() if len(running) == 1 else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Any) -> Generator[None, Any, None]:
    """With ``--quiet-lock``: a scenario test runs holding the lock, alone if it is quiet,
    and the clusters it touches (shared) or breaks (alone): quiet.claim. Its ``Holding``
    goes to the item (the ``quiet_lock`` fixture, the check's labels)."""
    run = get_run(item.config)
    lock = run.options.quiet_lock
    if lock is None or item.get_closest_marker("scenario") is None:
        yield
        return
    from harness.conformance import quiet

    clusters, mesh = item.config.stash.get(_CLUSTERS, ((), ()))
    claim = quiet.claim(
        item.stash.get(_QUIET, False), item.stash.get(_BREAKS, None), run.options.cluster,
        clusters, mesh, waits=item.stash.get(_WAITS, False),
    )  # fmt: skip
    with quiet.hold_claim(lock, claim) as holding:
        run.waited_s += holding.waited_s
        item.stash[fixtures.HOLDING] = holding  # a re-take's wait is the check's own time
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    """Record a scenario test's check once its teardown is done, with the time of all three
    phases (the setup of a shared fixture is billed to the first test that needs it)."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    marker = item.get_closest_marker("scenario")
    if marker is None:
        return
    run = get_run(item.config)
    spent = call.duration - (run.take_unbilled() if call.when != "call" else 0.0)
    item.stash[_SPENT] = item.stash.get(_SPENT, 0.0) + max(0.0, spent)
    state = _state(report)
    if call.when == "call" or (call.when == "setup" and state != "passed"):
        item.stash[_OUTCOME] = (state, _message(report).removeprefix(NOT_APPLICABLE))
    if call.when == "teardown":
        state, message = item.stash.get(_OUTCOME, ("failed", "the test did not run"))
        if report.failed and state != "failed":
            state, message = "failed", f"teardown: {_message(report)}"
        holding = item.stash.get(fixtures.HOLDING, None)
        run.check(
            int(marker.args[0]), _check_name(item), _item_mode(item), state, message,
            item.stash[_SPENT], holding.labels() if holding else None,
        )  # fmt: skip


def _state(report: pytest.TestReport) -> Outcome:
    if report.passed:
        return "passed"
    if report.skipped:
        return "not-applicable" if _message(report).startswith(NOT_APPLICABLE) else "skipped"
    return "failed"


def _check_name(item: pytest.Item) -> str:
    """The test's name with its parameters, less the mode (the check carries that apart)."""
    callspec = getattr(item, "callspec", None)
    name = getattr(item, "originalname", item.name)
    if callspec is None:
        return name
    rest = strip_id(callspec.id, str(callspec.params.get("mode", "")))
    return f"{name}[{rest}]" if rest else name


def strip_id(test_id: str, part: str) -> str:
    """Remove one parameter's id (which may itself contain "-") from a joined test id."""
    if not part:
        return test_id
    if test_id == part:
        return ""
    if test_id.startswith(f"{part}-"):
        return test_id[len(part) + 1 :]
    if test_id.endswith(f"-{part}"):
        return test_id[: -len(part) - 1]
    return test_id.replace(f"-{part}-", "-", 1)


def _item_mode(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "mode" in callspec.params:
        return str(callspec.params["mode"])
    run = get_run(item.config)
    return str(run.current) if run.current else "none"


def _message(report: pytest.TestReport) -> str:
    """The assertion's message (or the skip reason), not the whole traceback."""
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):  # skipped: (file, line, reason)
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    return str(longrepr).strip().splitlines()[-1] if str(longrepr).strip() else ""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = get_run(session.config).finish()
    if path is not None:
        session.config.stash[_RESULTS] = str(path)


_RESULTS = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = get_run(config)
    if run.mode_seconds:
        terminalreporter.section("podlab: time per mode")
        for spec, seconds in run.mode_seconds.items():
            terminalreporter.write_line(f"{spec:<24} {seconds:7.1f} s")
    results = config.stash.get(_RESULTS, None)
    if results:
        terminalreporter.write_line(f"podlab results: {results}")


__all__ = ["fixtures"]
