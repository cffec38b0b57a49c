"""containerlab's ``exec:`` through the VM backend's path, and ``startup-delay``.

No VM is booted: the VM backend's own entry (``harness.lab.vm.exec_enter``) builds
the ``ssh … node -- CMD`` argv, and each command is then run the way sshd runs a
remote command (the login shell with ``-c`` and that one string), on this host.
What is left out is only the transport; order, delays, environment, quoting, the
log and the failure are the real runner's (``harness.lab.nodeexec.run_all``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.lab import nodeexec, vm
from harness.plan.build import load_plan
from harness.plan.model import NodePlan

TOPO = """\
name: Exec_Paths
topology:
  nodes:
    SRV:
      kind: linux
      startup-delay: 2
      exec:
        - echo "srv $CLAB_NODE_NAME $CLAB_LAB_NAME $GREETING" 'two  spaces' $((40+2))
    PC1:
      kind: linux
      stages: {configure: {wait-for: [{node: SRV, stage: healthy}]}}
      exec: ["echo pc1"]
    PC2:
      kind: linux
      env: {GREETING: hi}
      exec: ["echo pc2"]
"""


def _as_sshd(ssh: Callable[[NodePlan], Callable[[list[str]], list[str]]], seen: list[str]):  # type: ignore[no-untyped-def]
    """The VM path's argv, with the remote command run as sshd runs it (sh -c STRING)."""

    def enter(node: NodePlan) -> Callable[[list[str]], list[str]]:
        def argv(cmd: list[str]) -> list[str]:
            full = ssh(node)(cmd)
            assert full[:7] == [
                "ssh",
                "-F",
                "/lab/ssh_config",
                "-o",
                "BatchMode=yes",
                node.name,
                "--",
            ]
            seen.append(node.name)
            return ["/bin/sh", "-c", full[7]]

        return argv

    return enter


def test_vm_exec_path_runs_the_shared_runner(tmp_path: Path) -> None:
    """Order (PC2 first: no delay; SRV after its 2 s; PC1 after SRV, which it waits
    for), the node's environment and the quoting survive the ssh string."""
    (tmp_path / "t.clab.yml").write_text(TOPO)
    plan = load_plan(tmp_path / "t.clab.yml")
    assert plan.exec_order == ("pc2", "srv", "pc1")
    assert {n: plan.nodes[n].exec_delay for n in plan.exec_order} == {"pc2": 0, "srv": 2, "pc1": 2}
    seen: list[str] = []
    start = time.monotonic()
    nodeexec.run_all(
        plan, tmp_path / "exec", _as_sshd(vm.exec_enter(Path("/lab/ssh_config")), seen)
    )
    took = time.monotonic() - start
    assert seen == ["pc2", "srv", "pc1"]
    assert 2.0 <= took < 10, took  # the startup-delay was waited for, once
    srv = (tmp_path / "exec" / "srv.log").read_text()
    assert srv.startswith("# startup-delay: exec starts 2 s after the nodes")
    assert "srv SRV Exec_Paths  two  spaces 42\n" in srv  # GREETING is PC2's only
    assert "pc1\n# exit status 0" in (tmp_path / "exec" / "pc1.log").read_text()
    assert "startup-delay" not in (tmp_path / "exec" / "pc2.log").read_text()


def test_no_delay_control(tmp_path: Path) -> None:
    """Control: without startup-delay the same lab runs in file and wait-for order at once."""
    (tmp_path / "t.clab.yml").write_text(TOPO.replace("startup-delay: 2", "startup-delay: 0"))
    plan = load_plan(tmp_path / "t.clab.yml")
    assert plan.exec_order == ("srv", "pc1", "pc2")
    start = time.monotonic()
    nodeexec.run_all(plan, tmp_path / "exec", _as_sshd(vm.exec_enter(Path("/lab/ssh_config")), []))
    assert time.monotonic() - start < 2.0


def test_vm_exec_failure_is_located(tmp_path: Path) -> None:
    """A failing command over the VM path fails with its node, its line and its output."""
    (tmp_path / "t.clab.yml").write_text(
        TOPO.replace("startup-delay: 2", "startup-delay: 0").replace(
            'exec: ["echo pc2"]', 'exec: ["echo pc2", "ls /no/such/dir"]'
        )
    )
    plan = load_plan(tmp_path / "t.clab.yml")
    with pytest.raises(UserError) as info:
        nodeexec.run_all(
            plan, tmp_path / "exec", _as_sshd(vm.exec_enter(Path("/lab/ssh_config")), [])
        )
    (problem,) = info.value.problems
    assert problem.where == "node PC2 exec[1]" and problem.line == 16
    assert "/no/such/dir" in problem.message and "rolled back" in problem.message


def test_validate_says_the_exec_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`podlab validate` names the order and delays when they differ from the file's;
    control: with no delay and file order kept, no such line."""
    from harness.cli import main

    (tmp_path / "t.clab.yml").write_text(TOPO)
    assert main(["validate", str(tmp_path / "t.clab.yml")]) == 0
    out = capsys.readouterr().out
    assert "exec order: pc2 (PC2), srv (SRV) (after 2 s), pc1 (PC1) (after 2 s)" in out
    (tmp_path / "t.clab.yml").write_text(TOPO.replace("startup-delay: 2", "startup-delay: 0"))
    assert main(["validate", str(tmp_path / "t.clab.yml")]) == 0
    assert "exec order" not in capsys.readouterr().out
