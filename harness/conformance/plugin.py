"""podlab's pytest plugin (entry point ``pytest11: podlab``): options, mode matrix, results.

Options: ``--lab NAME`` (test a lab that is up), ``--topology FILE`` (build,
deploy, test and remove one), ``--mode MODE`` (repeatable: the matrix; default
the lab's own mode; ``MODE+wireguard`` adds encryption), ``--results DIR``,
``--keep-lab``, ``--thorough``, ``--tput-rounds``, ``--tput-seconds``. Every
test marked ``@pytest.mark.scenario(N)`` becomes a check in the results file
(scenario, mode, outcome, the assertion's message); ``record`` adds
measurements. The plugin is inert in sessions that collect no such test, so
podlab's own test run is unaffected by it.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.conformance import fixtures
from harness.conformance.fixtures import (  # noqa: F401  (fixtures this plugin provides)
    RUN_KEY,
    get_run,
    lab,
    mode,
    module_pod_factory,
    nodes,
    pod_factory,
    podlab_run,
    record,
    thorough,
)
from harness.conformance.labctl import ModeSpec
from harness.conformance.run import Options, Run
from harness.errors import PodlabError
from harness.plan.model import CALICO_MODES
from harness.results.model import Outcome

_DURATION = pytest.StashKey[float]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("podlab", "podlab conformance")
    g.addoption("--lab", metavar="NAME", help="test this lab, which is up and deployed")
    g.addoption("--topology", metavar="FILE", type=Path,
                help="bring up and deploy this topology's lab, test it, tear it down")  # fmt: skip
    g.addoption("--mode", action="append", default=[], metavar="MODE", dest="podlab_modes",
                help="datapath mode to test (repeatable: the matrix; MODE+wireguard "
                "encrypts); the lab is re-deployed per mode")  # fmt: skip
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
    opts = Options(
        lab=config.getoption("--lab"),
        topology=config.getoption("--topology"),
        modes=tuple(config.getoption("podlab_modes") or ()),
        results=config.getoption("--results"),
        keep_lab=bool(config.getoption("--keep-lab")),
        thorough=bool(config.getoption("--thorough")),
    )
    for text in opts.modes:
        try:
            ModeSpec.parse(text)
        except PodlabError as exc:
            raise pytest.UsageError(str(exc)) from exc
    config.stash[RUN_KEY] = Run(opts)


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
    modes = list(run.options.modes) or [_default_mode(run)]
    metafunc.parametrize("mode", modes, indirect=True, scope="session")


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
    return "lab-default"


# Suites run in this order within each mode: traffic first, then SLOs, then hygiene
# (before faults, whose provoked errors must not count), then fault injection.
MODULE_ORDER = {
    "test_connectivity": 0, "test_mtu": 1, "test_latency": 2, "test_throughput": 3,
    "test_slo": 4, "test_hygiene": 8, "test_faults": 9, "test_bgp": 9, "test_modeswitch": 10,
    "test_mesh_failover": 9,  # cuts links and stops an etcd: after hygiene
}  # fmt: skip
# The expensive checks (the 50-pod SLO, node leave/join, faults, the mode switch,
# 4-stream throughput) say little more per mode than once: in a matrix of several
# modes they run for the first mode only unless --thorough (see docs/conformance.md).
FIRST_MODE_ONLY = {  # suite module -> part of the test id that marks it ("" = every test)
    "test_slo": "", "test_faults": "", "test_modeswitch": "", "test_throughput": "tcp-4",
    "test_services": "", "test_dns": "",  # kube-proxy and DNS do not depend on the datapath
    "test_mesh_services": "", "test_mesh_failover": "",  # nor do global services and failover
}  # fmt: skip
# Policy is enforced at the pod interface, whose style (bridged cni0 or routed cali*)
# belongs to the mode family: it runs for the first mode of each family.
FIRST_OF_FAMILY = {"test_policy": ""}


def _family(matrix_mode: str) -> str:
    return "calico" if matrix_mode.split("+", 1)[0] in CALICO_MODES else "flannel"


def _first_mode_only(run: Run, items: list[pytest.Item]) -> None:
    """Skip the FIRST_MODE_ONLY tests for every mode but the matrix's first (not --thorough)."""
    modes = list(run.options.modes)
    if run.options.thorough or len(modes) < 2:
        return
    reason = (f"heavy check: runs for the matrix's first mode ({modes[0]}) only; "
              "--thorough runs it for every mode")  # fmt: skip
    family_first = {_family(m): m for m in reversed(modes)}
    for item in items:
        callspec = getattr(item, "callspec", None)
        this = callspec.params.get("mode") if callspec is not None else None
        if callspec is None or this in (None, modes[0]):
            continue
        module = getattr(getattr(item, "module", None), "__name__", "").rsplit(".", 1)[-1]
        part = FIRST_MODE_ONLY.get(module)
        if part is not None and part in callspec.id:
            item.add_marker(pytest.mark.skip(reason=reason))
        part = FIRST_OF_FAMILY.get(module)
        first = family_first[_family(this)]
        if part is not None and part in callspec.id and first != this:
            item.add_marker(
                pytest.mark.skip(
                    reason=f"runs for {first}, the first mode of its pod interface family"
                )
            )


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
    modes = list(run.options.modes)

    def key(item: pytest.Item) -> tuple[int, int]:
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get("mode") if callspec else None
        mode_rank = modes.index(param) if param in modes else (0 if param else -1)
        module = getattr(getattr(item, "module", None), "__name__", "").rsplit(".", 1)[-1]
        return mode_rank, MODULE_ORDER.get(module, 5)

    items.sort(key=key)
    _first_mode_only(run, items)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    marker = item.get_closest_marker("scenario")
    if marker is None:
        return
    if call.when == "setup":
        item.stash[_DURATION] = time.monotonic()
    done = (call.when == "call") or (call.when == "setup" and not report.passed)
    if not done:
        return
    started = item.stash.get(_DURATION, time.monotonic())
    state: Outcome = "skipped" if report.skipped else ("passed" if report.passed else "failed")
    get_run(item.config).check(
        int(marker.args[0]), _check_name(item), _item_mode(item), state,
        _message(report), time.monotonic() - started,
    )  # fmt: skip


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
