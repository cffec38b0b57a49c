"""remote.connect_lab and the ssh masters of conformance sessions
(harness/conformance/remote.py): every node reached at once, each checked for ssh and
netcheck; each session's masters are its own, so one session closing them never cuts
another's."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.conformance import remote
from harness.errors import LabError
from harness.exec import Result
from harness.plan.build import load_plan

REPO = Path(__file__).resolve().parents[2]
TWO = REPO / "topologies" / "two-clusters.clab.yml"


def test_sessions_sharing_a_lab_close_only_their_own_masters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lockstep: the c2 session finished and ran ``ssh -O exit`` for every node on the
    one shared control path, cutting the mesh session's command on c1-w1 (255, no
    message). Now every session connects through ``tcm/<its pid>``."""
    plan = load_plan(TWO)
    monkeypatch.setattr(remote, "wait_ssh", lambda node, **_: True)
    exits: list[str] = []

    def fake_run(argv: list[str], **_: object) -> Result:
        exits.append(next(a for a in argv if a.startswith("ControlPath=")).split("=", 1)[1])
        return Result(argv, 0, "", "")

    monkeypatch.setattr(remote, "run", fake_run)
    mine = remote.connect_lab(plan, tmp_path / "ssh_config", tmp_path)
    assert Path(mine["c1-w1"].control_path).parent == tmp_path / "tcm" / str(os.getpid())
    other_dir = remote.control_dir(tmp_path, pid=os.getpid() + 1)
    other = remote.connect(plan.nodes["c1-w1"], tmp_path / "ssh_config", other_dir)
    assert other.control_path != mine["c1-w1"].control_path
    for node in mine.values():
        node.close()
    assert sorted(exits) == sorted(n.control_path for n in mine.values())
    assert other.control_path not in exits
    assert not (tmp_path / "tcm" / str(os.getpid())).exists()  # emptied, removed
    assert other_dir.is_dir()  # the other session's directory stays


def test_a_control_path_too_long_for_a_unix_socket_moves_to_tmp(tmp_path: Path) -> None:
    """ssh binds ``<ControlPath>.<16 chars>``: past 107 bytes it refuses ("too long for
    Unix domain socket") and every command fails with 255."""
    deep = tmp_path / ("d" * 60) / ".podlab" / "two-clusters"
    path = remote.control_dir(deep, ["c1-w1"], pid=4242) / "c1-w1"
    assert len(str(path)) + 17 <= 107, path
    assert path.parent.name.startswith("podlab-tcm-") and path.parent.name.endswith("-4242")
    short = remote.control_dir(Path("/w/.podlab/two-clusters"), ["c1-w1"], pid=4242)
    assert short == Path("/w/.podlab/two-clusters/tcm/4242")


class FakeNode:
    """Stands for a remote.Node: its probe answers once every node is asking."""

    def __init__(
        self, name: str, barrier: threading.Barrier, fail: bool = False, python: bool = True
    ) -> None:
        self.name = name
        self.barrier = barrier
        self.fail = fail
        self.python = python
        self.asked: list[list[str]] = []
        self.netcheck_installed = False

    def run(self, argv: list[str], timeout_s: float = 30.0) -> Any:
        self.asked.append(list(argv))
        self.barrier.wait()  # serial connects never get here all at once: BrokenBarrierError
        if self.fail:
            raise LabError(f"node {self.name}: ssh failed running {argv[0]}")
        return SimpleNamespace(returncode=0 if self.python or argv == ["true"] else 1)

    def install_netcheck(self) -> None:
        self.netcheck_installed = True


def _plan(names: list[str]) -> Any:
    return SimpleNamespace(nodes={n: SimpleNamespace(name=n) for n in [*names, "br"]},
                           bridges={"br"})  # fmt: skip


def test_connect_lab_reaches_every_node_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One round per node: the probe that waits for ssh also asks for podlab's Python;
    only a node without it (an outside host) gets the standalone netcheck."""
    names = [f"n{i}" for i in range(6)]
    barrier = threading.Barrier(len(names), timeout=10)
    made: dict[str, FakeNode] = {}

    def connect(plan: Any, ssh_config: Path, control_dir: Path, kept: bool) -> FakeNode:
        made[plan.name] = FakeNode(plan.name, barrier, python=plan.name != "n5")
        return made[plan.name]

    monkeypatch.setattr(remote, "connect", connect)
    out = remote.connect_lab(_plan(names), Path("ssh_config"), Path("lab"))
    assert list(out) == names  # the plan's order, bridges left out
    assert all(n.asked == [["test", "-x", remote.echo.NODE_PYTHON]] for n in made.values())
    assert [n for n, node in made.items() if node.netcheck_installed] == ["n5"]


def test_connect_lab_raises_a_node_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["a", "b", "c"]
    barrier = threading.Barrier(len(names), timeout=10)
    monkeypatch.setattr(remote, "connect", lambda p, *_: FakeNode(p.name, barrier, p.name == "b"))
    monkeypatch.setattr(remote, "wait_ssh", lambda node, **_: node.run(["true"]))
    with pytest.raises(LabError, match="node b"):
        remote.connect_lab(_plan(names), Path("ssh_config"), Path("lab"))


def test_a_kept_role_s_masters_outlive_its_session_until_the_script_closes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lockstep: c1's share keeps its masters in ``tcm/keep-c1`` (long ControlPersist,
    keepalives) for its next phase; ``close_kept`` stops every kept role's — in the lab
    and in the tmp fallback of a deep checkout — and leaves other sessions' alone."""
    plan = load_plan(TWO)
    monkeypatch.setattr(remote, "wait_ssh", lambda node, **_: True)
    kept = remote.connect_lab(plan, tmp_path / "ssh_config", tmp_path, keep="c1")
    node = kept["c1-w1"]
    assert Path(node.control_path).parent == tmp_path / "tcm" / "keep-c1"
    assert node.host.backend.controlpersist == remote.KEPT_PERSIST_S
    assert "ServerAliveInterval" in node.host.backend.ssh_extra_args
    plain = remote.connect(plan.nodes["c1-w1"], tmp_path / "ssh_config", tmp_path / "tcm" / "1")
    assert plain.host.backend.controlpersist == remote.CONTROL_PERSIST_S
    deep = tmp_path / ("d" * 80)
    far = remote.control_dir(deep, ["c1-w1"], owner="keep-mesh")
    assert far.parent == Path(remote.tempfile.gettempdir())
    monkeypatch.setattr(remote, "fallback_prefix", lambda lab_dir: tmp_path / "tmp" / "tcm-x-")
    (tmp_path / "tmp" / "tcm-x-keep-mesh").mkdir(parents=True)
    for d in (tmp_path / "tcm" / "keep-c1", tmp_path / "tmp" / "tcm-x-keep-mesh"):
        for name in ("c1-w1", "router"):
            (d / name).touch()  # a socket, live or stale: either is stopped and removed
    stopped: list[str] = []

    def fake_run(argv: list[str], **_: object) -> Result:
        stopped.append(argv[argv.index("-O") + 2] + "@" + argv[4].split("=", 1)[1])
        return Result(argv, 0, "", "")

    monkeypatch.setattr(remote, "run", fake_run)
    done = remote.close_kept(tmp_path, tmp_path / "ssh_config")
    assert done == [str(tmp_path / "tcm" / "keep-c1"), str(tmp_path / "tmp" / "tcm-x-keep-mesh")]
    assert len(stopped) == 4 and stopped[0] == f"c1-w1@{tmp_path}/tcm/keep-c1/c1-w1"
    assert not (tmp_path / "tcm" / "keep-c1").exists()
    assert not (tmp_path / "tmp" / "tcm-x-keep-mesh").exists()
    assert (tmp_path / "tcm" / "1").is_dir()  # a session of its own: not a kept role's
    assert remote.main(["close-kept", str(tmp_path)]) == 0  # nothing left: says so
    assert remote.main(["close", str(tmp_path)]) == 2


def test_hygiene_finds_a_control_directory_left_in_the_tmp_fallback(tmp_path: Path) -> None:
    from harness.conformance import hygiene

    lab_dir = tmp_path / ("d" * 90) / "t-hyg"
    left = Path(str(remote.fallback_prefix(lab_dir)) + "keep-c1")
    left.mkdir()
    try:
        assert f"ssh control directory {left}" in hygiene.leftovers("t-hyg-none", lab_dir)
    finally:
        left.rmdir()
    assert hygiene.leftovers("t-hyg-none", lab_dir) == []


def test_process_age_reads_the_start_from_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``start-up`` timing: now minus boot time plus the process's start ticks."""
    import os
    import time

    from harness.conformance.run import process_age_s

    monkeypatch.setattr(time, "time", lambda: 1_000_150.0)
    monkeypatch.setattr(os, "sysconf", lambda name: 100)
    # comm may hold spaces and parentheses; starttime is the 22nd field: 12345 ticks
    fields = ["S", *["0"] * 18, "12345", "0"]
    stat = "4242 (podlab (x) y) " + " ".join(fields)
    proc_stat = "cpu  1 2 3\nbtime 1000000\nprocesses 9\n"
    assert process_age_s(stat, proc_stat) == pytest.approx(150.0 - 123.45)
    assert process_age_s("garbage", proc_stat) is None
    assert process_age_s(stat, "no boot time here\n") is None
    assert process_age_s() is not None  # this very process, on Linux


class RouteNode:
    """A node for labctl.wait_pod_routes: asked by every thread at once, it answers the
    addresses it has no route to (none once ``routed``)."""

    def __init__(self, name: str, barrier: threading.Barrier, routed: set[str]) -> None:
        self.name, self.barrier, self.routed = name, barrier, routed
        self.asked: list[list[str]] = []

    def run(self, argv: list[str], timeout_s: float = 30.0) -> Any:
        self.barrier.wait()  # every node of the lab is asked in the same round
        want = argv[4:]  # sh -c SCRIPT routes ADDR…
        self.asked.append(want)
        return SimpleNamespace(stdout="\n".join(a for a in want if a not in self.routed))


def _all(names: dict[str, list[str]]) -> list[str]:
    return [n for members in names.values() for n in members]


def _route_lab(names: dict[str, list[str]]) -> Any:
    """A lab of these clusters' nodes; node i (in order) has pod CIDR 10.244.i.0/24."""
    cidrs = {n: f"10.244.{i}.0/24" for i, n in enumerate(_all(names))}

    def records(cluster: str) -> list[Any]:
        return [SimpleNamespace(name=n, podCIDR=cidrs[n]) for n in names[cluster]]

    clients = {c: SimpleNamespace(nodes=lambda c=c: records(c)) for c in names}
    plan = SimpleNamespace(cluster_nodes=lambda c: [SimpleNamespace(name=n) for n in names[c]])
    return SimpleNamespace(name="t", clusters=tuple(names), plan=plan, client=clients.__getitem__)


def test_pod_routes_are_asked_of_every_node_at_once() -> None:
    from harness.conformance import labctl

    names = {"c1": ["a1", "a2"], "c2": ["b1", "b2", "b3"]}
    barrier = threading.Barrier(5, timeout=10)
    routed = {f"10.244.{i}.1" for i in range(5)}
    nodes = {n: RouteNode(n, barrier, routed) for n in _all(names)}
    labctl.wait_pod_routes(_route_lab(names), nodes, timeout_s=5)  # type: ignore[arg-type]
    assert nodes["a1"].asked == [["10.244.1.1"]]  # its own cluster's peers only
    assert nodes["b2"].asked == [["10.244.2.1", "10.244.4.1"]]


def test_pod_routes_missing_are_named_after_the_time_limit() -> None:
    from harness.conformance import labctl

    barrier = threading.Barrier(2, timeout=10)
    nodes = {n: RouteNode(n, barrier, set()) for n in ("a1", "a2")}
    with pytest.raises(LabError, match=re.escape("a1 → 10.244.1.1, a2 → 10.244.0.1")):
        labctl.wait_pod_routes(_route_lab({"c1": ["a1", "a2"]}), nodes, timeout_s=0.5)  # type: ignore[arg-type]
