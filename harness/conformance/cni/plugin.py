"""pytest plugin of the CNI spec suite: options, targets, versions, pods, results.

Loaded with ``-p harness.conformance.cni.plugin`` (``podlab cni-test`` does so).
Options: ``--cni-target NAME`` (repeatable; ``podlab``, ``podlab-routed``,
``reference``, or ``NAME=CONF_FILE:DIR[:DIR…]`` for any plugin), ``--cni-results
DIR``. Every test runs once per target (a session-scoped node namespace each)
and, where it takes ``cni_version``, once per spec version. Each outcome is a
check of CONFORMANCE.md scenario 35 in a results file whose "modes" are the
targets, so ``podlab report`` shows one column per plugin.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.cni.spec import version_key
from harness.conformance.cni.targets import (
    BUILTIN,
    SUITE_VERSIONS,
    Call,
    CustomTarget,
    Node,
    Target,
    builtin,
)
from harness.errors import UserError

SCENARIO = 35
_STARTED = pytest.StashKey[float]()
_WRITER = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("podlab-cni", "podlab CNI spec suite")
    g.addoption("--cni-target", action="append", default=[], metavar="TARGET",
                help=f"plugin to test (repeatable): {', '.join(BUILTIN)}, or "
                "NAME=CONF_FILE:PLUGIN_DIR[:DIR...]")  # fmt: skip
    g.addoption("--cni-results", metavar="DIR", type=Path, help="write results JSON here")


def parse_target(text: str) -> Target:
    """A target from its command-line form; UserError naming what is wrong."""
    if text in BUILTIN:
        return builtin(text)
    name, sep, rest = text.partition("=")
    if not sep or ":" not in rest:
        raise UserError(
            f"--cni-target {text!r}: use one of {', '.join(BUILTIN)} or "
            "NAME=CONF_FILE:PLUGIN_DIR[:DIR...]"
        )
    conf, *dirs = rest.split(":")
    if not Path(conf).is_file():
        raise UserError(f"--cni-target {text!r}: {conf}: no such configuration file")
    return CustomTarget(Path(conf), [Path(d) for d in dirs], name=name)


def _targets(config: pytest.Config) -> list[str]:
    return list(config.getoption("--cni-target") or ["podlab", "reference"])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cni_since(version): the spec version a rule starts at")
    for text in _targets(config):
        try:
            parse_target(text)
        except UserError as exc:
            raise pytest.UsageError(str(exc)) from exc


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cni_target" in metafunc.fixturenames:
        names = _targets(metafunc.config)
        metafunc.parametrize("cni_target", names, indirect=True, scope="session",
                             ids=[n.split("=")[0] for n in names])  # fmt: skip
    if "cni_version" in metafunc.fixturenames:
        since = metafunc.definition.get_closest_marker("cni_since")
        first = since.args[0] if since else SUITE_VERSIONS[0]
        versions = [v for v in SUITE_VERSIONS if version_key(v) >= version_key(first)]
        metafunc.parametrize("cni_version", versions, indirect=True, scope="function")


@pytest.fixture(scope="session")
def cni_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The plugin under test, set up in its own throwaway node namespace."""
    target = parse_target(str(request.param))
    node = Node(target.name)
    try:
        target.setup(node)
        yield target
    finally:
        target.teardown()
        node.close()


@pytest.fixture
def cni_version(request: pytest.FixtureRequest, cni_target: Target) -> str:
    """A spec version; tests of a version the plugin does not claim are not applicable."""
    version = str(request.param)
    if version not in cni_target.versions:
        pytest.skip(
            f"not applicable: {cni_target.name} speaks {', '.join(cni_target.versions)}, "
            f"not {version}"
        )
    return version


class Pods:
    """Containers attached during one test, each DELeted and removed at its end."""

    def __init__(self, target: Target, network: str) -> None:
        self.target, self.network = target, network
        self.made: list[tuple[str, str, dict[str, Any]]] = []  # (container id, netns, conf)
        self._n = 0

    def env(self, command: str, cid: str, netns: str, ifname: str = "eth0") -> dict[str, str]:
        return self.target.env(command, containerid=cid, netns=netns, ifname=ifname)

    def add(self, version: str, pool: str = "normal", **extra: Any) -> tuple[Call, str, str]:
        """A new container namespace and ADD; returns (call, container id, netns)."""
        assert self.target.node is not None
        self._n += 1
        cid = f"cnitest-{self.network}-{self._n}"
        netns = self.target.node.container(cid[-20:])
        conf = {**self.target.config(version, self.network, pool), **extra}
        self.made.append((cid, netns, conf))
        return self.target.call("ADD", conf, self.env("ADD", cid, netns)), cid, netns

    def call(
        self, command: str, cid: str, netns: str, conf: dict[str, Any], ifname: str = "eth0"
    ) -> Call:
        return self.target.call(command, conf, self.env(command, cid, netns, ifname))

    def conf_of(self, cid: str) -> dict[str, Any]:
        return next(c for i, _n, c in self.made if i == cid)

    def cleanup(self) -> None:
        for cid, netns, conf in reversed(self.made):
            conf = {k: v for k, v in conf.items() if k != "prevResult"}
            with contextlib.suppress(Exception):
                self.target.call("DEL", conf, self.env("DEL", cid, netns))
            with contextlib.suppress(OSError):
                from harness.cni import nsutil

                nsutil.remove(netns)


@pytest.fixture
def pods(request: pytest.FixtureRequest, cni_target: Target) -> Iterator[Pods]:
    """Attach containers in a network named after the test; everything goes at its end."""
    name = request.node.originalname.removeprefix("test_")[:24].replace("_", "-")
    p = Pods(cni_target, f"t-{name}")
    try:
        yield p
    finally:
        p.cleanup()


# -- results ---------------------------------------------------------------------------
def _writer(config: pytest.Config) -> Any:
    writer = config.stash.get(_WRITER, None)
    if writer is None:
        from harness.results import env
        from harness.results.store import ResultsWriter, RunMeta

        base = config.getoption("--cni-results")
        if base is None:
            return None
        started = datetime.now(UTC)
        meta = RunMeta(
            run_id=f"{started:%Y%m%dT%H%M%SZ}-cni-test",
            topology="cni-test",
            modes=tuple(n.split("=")[0] for n in _targets(config)),
            environment=env.capture(),
            started_at=started,
        )
        writer = ResultsWriter(Path(base) / f"{meta.run_id}.json", meta)
        config.stash[_WRITER] = writer
    return writer


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if callspec is None or "cni_target" not in callspec.params:
        return
    if call.when == "setup":
        item.stash[_STARTED] = time.monotonic()
    if not (call.when == "call" or (call.when == "setup" and not report.passed)):
        return
    writer = _writer(item.config)
    if writer is None:
        return
    target = str(callspec.params["cni_target"]).split("=")[0]
    version = callspec.params.get("cni_version")
    name = getattr(item, "originalname", item.name) + (f"[{version}]" if version else "")
    state = "skipped" if report.skipped else ("passed" if report.passed else "failed")
    took = max(0.0, time.monotonic() - item.stash.get(_STARTED, time.monotonic()))
    writer.check(SCENARIO, name, mode=target, outcome=state, message=_message(report)[:2000],
                 duration_s=took)  # fmt: skip


def _message(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    return str(crash.message) if crash is not None else str(longrepr).strip()[-500:]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    writer = session.config.stash.get(_WRITER, None)
    if writer is not None:
        writer.finish()
        session.config.stash[_RESULTS] = str(writer.path)


_RESULTS = pytest.StashKey[str]()


def results_path(config: pytest.Config) -> str | None:
    return config.stash.get(_RESULTS, None)
