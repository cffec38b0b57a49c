"""ssh masters of conformance sessions (harness/conformance/remote.py): each
session's are its own, so one session closing them never cuts another's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.conformance import remote
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
    monkeypatch.setattr(remote, "wait_ssh", lambda node: None)
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
