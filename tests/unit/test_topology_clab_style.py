"""containerlab files as containerlab users write them (issue 17): the pure parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.topology.load import NAME_RE, derived_name


@pytest.mark.parametrize(
    ("clab", "derived"),
    [
        ("c1-w1", "c1-w1"),  # names podlab already accepted stay as they are
        ("PC1", "pc1"),
        ("srv.example_1", "srv-example-1"),
        ("a|b", "a-b"),
        ("R1.", "r1"),
        ("Very.Long.Node_Name.That.Exceeds.Thirty.Two", "very-long-node-name-that-7ac5b2"),
    ],
)
def test_derived_names_are_valid_and_stable(clab: str, derived: str) -> None:
    assert derived_name(clab) == derived
    assert NAME_RE.match(derived_name(clab))


def test_long_names_differing_only_at_the_end_stay_distinct() -> None:
    a = derived_name("Very.Long.Node_Name.That.Exceeds.Thirty.Two.A")
    b = derived_name("Very.Long.Node_Name.That.Exceeds.Thirty.Two.B")
    assert a != b and NAME_RE.match(a) and NAME_RE.match(b)


def test_exec_commands_get_the_node_env_only() -> None:
    from harness.lab import nodeexec
    from harness.plan.build import load_plan
    from tests.conftest import REPO

    plan = load_plan(REPO / "tests/golden/topology/clab/plain-two-hosts.clab.yml")
    pc1 = plan.nodes["pc1"]
    argv = nodeexec.command_argv(plan, pc1, "ip addr add 192.168.11.1/24 dev eth1")
    assert argv[:2] == ["env", "-i"] and argv[-3:-1] == ["/bin/sh", "-c"]
    assert "CLAB_NODE_NAME=PC1" in argv and "CLAB_LAB_NAME=Plain_Lab.01" in argv
    assert not any(a.startswith("PODLAB_") for a in argv)  # podlab's own env stays out
    ssh = nodeexec.over_ssh(REPO / "ssh_config", "pc1")(argv)
    assert ssh[-1].startswith("env -i ") and ssh[-1].endswith(
        "'ip addr add 192.168.11.1/24 dev eth1'"
    )


def test_bind_targets_are_the_node_private_directories() -> None:
    from harness.lab.nodeinit import PRIVATE_DIRS
    from harness.topology.load import BIND_TARGETS

    assert set(BIND_TARGETS) == {*PRIVATE_DIRS, "/run"}


def test_exec_runs_in_wait_for_order(tmp_path: Path) -> None:
    """SRV's exec runs before PC1's (PC1 waits for it), against file order; the real
    runner, with each command run on this host instead of in a node."""
    from harness.lab import nodeexec
    from harness.plan.build import load_plan
    from tests.conftest import REPO

    plan = load_plan(REPO / "tests/golden/topology/clab/stages-wait-for.clab.yml")
    seen = tmp_path / "order"

    def here(node):  # type: ignore[no-untyped-def]
        return lambda argv: ["sh", "-c", f"echo {node.name} >> {seen}"]

    nodeexec.run_all(plan, tmp_path / "exec", here)
    assert seen.read_text().split() == ["srv", "pc1"]
    assert (tmp_path / "exec" / "pc1.log").read_text().startswith("$ ip addr add")
