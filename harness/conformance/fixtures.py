"""Fixtures the suites use: the lab, the mode matrix, nodes, pods and ``record``.

- ``lab`` (session): the lab named by ``--lab`` (left as it is), or the one
  ``--topology`` describes, brought up and deployed here and torn down at the
  end (in a finally, unless ``--keep-lab``).
- ``mode`` (session, parametrized over ``--mode``): re-deploys the lab with the
  mode once, when the matrix moves to it, and waits for every agent to report it.
- ``nodes``: every lab node as a ``remote.Node`` (testinfra over ssh).
- ``echo_pods``: one set of echo pods per matrix entry, shared by the suites.
- ``pod_factory``: echo pods on chosen nodes, deleted after the test.
- ``record``: measurements tagged with the test's mode and scenario.
- ``quiet_lock``: what the test holds of the quiet lock (``quiet.Holding``): a test
  marked ``waits`` lets the machine be shared while it only waits
  (``with quiet_lock.shared(): …``); without ``--quiet-lock`` that changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from harness.conformance import fallbacks, labctl, paths, quiet, remote
from harness.conformance.catalogue import not_applicable
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.pods import Pod, PodFactory
from harness.conformance.run import Recorder, Run, process_age_s

RUN_KEY = pytest.StashKey[Run]()
HOLDING = pytest.StashKey[quiet.Holding]()  # set by the plugin around each scenario test


def get_run(config: pytest.Config) -> Run:
    return config.stash[RUN_KEY]


def say(config: pytest.Config, message: str) -> None:
    """A progress line on the terminal, past pytest's output capture (lab steps take minutes)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capman is None:
        reporter.write_line(f"podlab: {message}")
        return
    with capman.global_and_fixture_disabled():
        reporter.write_line(f"podlab: {message}")


@pytest.fixture(scope="session")
def podlab_run(request: pytest.FixtureRequest) -> Run:
    return get_run(request.config)


@pytest.fixture(scope="session")
def thorough(podlab_run: Run) -> bool:
    """``--thorough``: more pods, streams and seconds than the quick default."""
    return podlab_run.options.thorough


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest, podlab_run: Run) -> Iterator[Lab]:
    opts = podlab_run.options
    built: Lab | None = None
    entered = time.monotonic()
    try:
        if opts.lab:
            the_lab = labctl.attach(opts.lab)
        else:
            assert opts.topology is not None  # the plugin refuses to start without one
            say(request.config, f"bringing up {opts.topology}")
            started = time.monotonic()
            the_lab = labctl.bring_up(opts.topology)
            podlab_run.get_writer().timing("lab up", time.monotonic() - started)
            built = the_lab if the_lab.built else None
            first = ModeSpec.parse(opts.modes[0]) if opts.modes else None
            say(request.config, f"deploying lab {the_lab.name}" + (f" ({first})" if first else ""))
            seconds = labctl.deploy(the_lab, first)
            podlab_run.get_writer().timing("deploy", seconds, str(first or ""))
            say(request.config, f"lab {the_lab.name} deployed in {seconds:.0f} s")
        if not the_lab.endpoints:
            pytest.fail(f"lab {the_lab.name} has no deployed cluster (run `podlab deploy`)")
        the_lab.set_focus(opts.cluster)  # after the first deploy, which is the whole lab's
        podlab_run.lab = the_lab
        podlab_run.unbilled_s += time.monotonic() - entered
        yield the_lab
    finally:
        if built is not None and not opts.keep_lab:
            say(request.config, f"tearing down lab {built.name}")
            _tear_down_and_check(podlab_run, built)


def _tear_down_and_check(run: Run, the_lab: Lab) -> None:
    """Take the lab we built down, then record whether anything of it is left (scenario 30)."""
    from harness.conformance import hygiene

    started = time.monotonic()
    labctl.tear_down(the_lab)
    run.get_writer().timing("tear down", time.monotonic() - started)
    time.sleep(1.0)  # ssh masters and sessions notice their sshd is gone
    left = hygiene.leftovers(the_lab.name, the_lab.lab_dir)
    mode = str(run.current) if run.current else "none"
    message = "; ".join(left) if left else "no namespace, link, process or lab directory left"
    run.check(30, "nothing_left_after_down", mode, "failed" if left else "passed", message, 0.0)


@pytest.fixture(scope="session")
def mode(
    request: pytest.FixtureRequest, lab: Lab, podlab_run: Run, nodes: dict[str, remote.Node]
) -> Iterator[str]:
    """The matrix entry under test; the lab is re-deployed when the matrix moves to it."""
    spec = ModeSpec.parse(request.param)
    entered = time.monotonic()
    writer = podlab_run.get_writer()
    if labctl.needs_deploy(lab, spec):
        say(request.config, f"re-deploying lab {lab.name} with mode {spec}")
        seconds = labctl.deploy(lab, spec, switch=True)
        writer.timing("deploy", seconds, str(spec))
        say(request.config, f"lab {lab.name} runs {spec} (deploy {seconds:.0f} s)")
    started = time.monotonic()
    labctl.wait_nodes_ready(lab, spec)
    labctl.wait_pod_routes(lab, nodes)
    writer.timing("ready", time.monotonic() - started, str(spec))  # agents Ready, routes in
    for name in dict.fromkeys(labctl.fallbacks(lab) + fallbacks.from_records(lab)):
        podlab_run.get_writer().note_fallback(name)
        say(request.config, f"{spec}: the agents use the {name} fallback")
    podlab_run.unbilled_s += time.monotonic() - entered
    if not podlab_run.mode_seconds:  # the session's first entry: what came before its checks
        age = process_age_s()
        if age is not None:
            writer.timing("start-up", age, str(spec))
    podlab_run.mode_started(spec)
    yield str(spec)
    podlab_run.mode_finished()
    writer.timing("mode", podlab_run.mode_seconds.get(str(spec), 0.0), str(spec))
    if podlab_run.options.quiet_lock is not None:
        writer.timing("quiet wait", podlab_run.waited_s, str(spec))
        podlab_run.waited_s = 0.0


@pytest.fixture(scope="session")
def nodes(lab: Lab, podlab_run: Run) -> Iterator[dict[str, remote.Node]]:
    """Every lab node (cluster members, routers, outside hosts) by name.

    With ``--ssh-keep ROLE`` (a lockstep phase) the ssh masters are the role's, kept
    for its next phase: the session does not close them (scripts/conformance.sh does,
    at the end of the run)."""
    entered = time.monotonic()
    keep = podlab_run.options.ssh_keep
    out = remote.connect_lab(lab.plan, lab.ssh_config, lab.lab_dir, keep=keep)  # at once
    podlab_run.get_writer().timing("connect", time.monotonic() - entered)
    podlab_run.unbilled_s += time.monotonic() - entered
    yield out
    if keep is None:
        for node in out.values():
            node.close()


@pytest.fixture
def pod_factory(lab: Lab, mode: str, nodes: dict[str, remote.Node]) -> Iterator[PodFactory]:
    factory = PodFactory(lab.client(), nodes)
    yield factory
    left = factory.delete_all()
    assert not left, f"pods not removed by the agent within 60 s: {', '.join(left)}"


@dataclass(frozen=True)
class EchoPods:
    """The echo pods a mode's suites share: two on the first node, one on every other.

    Made once per matrix entry (not once per suite): creating and waiting for
    pods was a large share of every mode's time. Suites that change pods (label
    them, delete them) make their own with ``pod_factory``.
    """

    lab: Lab
    first: Pod
    second: Pod  # on the first node too: the same-node peer
    on: dict[str, Pod]  # node name -> the pod there (the first node: ``first``)

    def pair(self, path: str) -> tuple[Pod, Pod]:
        """(client, server) on a "same-node", "cross-node" or "cross-segment" path (or n/a)."""
        if path == "same-node":
            return self.first, self.second
        pair = paths.node_pair(self.lab, path)
        if pair is None:
            not_applicable(paths.why_missing(self.lab, path))
        return self.on[pair[0]], self.on[pair[1]]


@pytest.fixture(scope="session")
def echo_pods(lab: Lab, mode: str, nodes: dict[str, remote.Node]) -> Iterator[EchoPods]:
    """One set of echo pods per matrix entry, shared by every suite that only talks to pods."""
    factory = PodFactory(lab.client(), nodes)
    names = [n.name for n in lab.cluster_nodes()]
    try:
        pods = factory.create([names[0], *names], prefix="echo")
        yield EchoPods(lab, pods[0], pods[1], {p.node.name: p for p in [pods[0], *pods[2:]]})
    finally:
        left = factory.delete_all()
        assert not left, f"pods not removed by the agent within 60 s: {', '.join(left)}"


@pytest.fixture(scope="module")
def module_pod_factory(lab: Lab, mode: str, nodes: dict[str, remote.Node]) -> Iterator[PodFactory]:
    """Like ``pod_factory``, for pods a whole module shares (one set per mode)."""
    factory = PodFactory(lab.client(), nodes)
    yield factory
    left = factory.delete_all()
    assert not left, f"pods not removed by the agent within 60 s: {', '.join(left)}"


@pytest.fixture
def record(request: pytest.FixtureRequest, podlab_run: Run) -> Recorder:
    marker = request.node.get_closest_marker("scenario")
    scenario = int(marker.args[0]) if marker else None
    mode = request.getfixturevalue("mode") if "mode" in request.fixturenames else "none"
    return Recorder(podlab_run, str(mode), scenario, request.node.originalname)


@pytest.fixture
def quiet_lock(request: pytest.FixtureRequest) -> quiet.Holding:
    """What the test holds of the quiet lock; a bare ``Holding`` (no lock) without one."""
    return request.node.stash.get(HOLDING, None) or quiet.Holding()
