"""`podlab deploy --switch` (playbooks/switch.yml) against the full deploy (site.yml).

A switch re-does only what a datapath mode reaches. These checks read the
playbooks themselves: every role whose files use the mode or the encryption
runs in a switch too (else a switch would leave it in the previous mode), the
switch installs nothing and restarts neither etcd nor the controller manager,
and both playbooks share the mode-dependent plays (one file, not a copy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.deploy.deploy import (
    SITE,
    SWITCH,
    SWITCH_REFUSED,
    request_for,
    source_root,
    switch_refused,
)
from harness.deploy.runner import Failure

PLAYBOOKS = source_root() / "playbooks"
MODE_VARS = ("podlab_mode", "podlab_encryption")


def plays(name: str) -> list[dict[str, Any]]:
    """The plays of a playbook, ``import_playbook`` expanded."""
    out: list[dict[str, Any]] = []
    for play in yaml.safe_load((PLAYBOOKS / name).read_text()):
        if "import_playbook" in play:
            out += plays(play["import_playbook"])
        else:
            out.append(play)
    return out


def roles_of(play: dict[str, Any]) -> set[str]:
    """Roles a play runs: ``roles:`` and ``include_role`` tasks."""
    names = {r if isinstance(r, str) else r["role"] for r in play.get("roles", [])}
    for task in play.get("tasks", []):
        inc = task.get("ansible.builtin.include_role") or task.get("include_role")
        if inc:
            names.add(inc["name"])
    return names


def roles_using_the_mode() -> set[str]:
    out = set()
    for role in (PLAYBOOKS / "roles").iterdir():
        text = "".join(p.read_text() for p in role.rglob("*") if p.is_file())
        if any(v in text for v in MODE_VARS):
            out.add(role.name)
    return out


def test_every_role_that_reads_the_mode_runs_in_a_switch() -> None:
    switched = set().union(*(roles_of(p) for p in plays(SWITCH)))
    using = roles_using_the_mode()
    assert {"agent", "router"} <= using  # the control: the scan finds what it must
    missing = using - switched
    assert not missing, f"roles that read the mode but a switch skips: {sorted(missing)}"


def test_a_switch_installs_nothing_and_leaves_etcd_and_the_controllers_alone() -> None:
    switched = set().union(*(roles_of(p) for p in plays(SWITCH)))
    full = set().union(*(roles_of(p) for p in plays(SITE)))
    assert {"common", "kvstore", "controllers"} <= full
    assert not switched & {"common", "kvstore", "controllers"}, switched
    agent = [p for p in plays(SWITCH) if "agent" in roles_of(p)]
    assert [p["vars"]["agent_switch_only"] for p in agent] == [True]


def test_a_switch_leaves_the_mesh_certificates_alone() -> None:
    """Only a switch sets mesh_switch_only, and the mesh role's copies obey it."""
    books = {b: yaml.safe_load((PLAYBOOKS / b).read_text()) for b in (SITE, SWITCH)}
    flags = {
        b: [
            p.get("vars", {}).get("mesh_switch_only")
            for p in plays_
            if p.get("import_playbook") == "mode-dependent.yml"
        ]
        for b, plays_ in books.items()
    }
    assert flags == {SITE: [None], SWITCH: [True]}
    tasks = yaml.safe_load((PLAYBOOKS / "roles" / "mesh" / "tasks" / "main.yml").read_text())
    copies = [t for t in tasks if {"ansible.builtin.copy", "ansible.builtin.shell"} & set(t)]
    assert len(copies) == 2 and all("mesh_switch_only" in t["when"] for t in copies)  # copy, unpack


def test_both_playbooks_end_with_the_same_mode_dependent_plays() -> None:
    tail = plays("mode-dependent.yml")
    assert tail and plays(SITE)[-len(tail) :] == tail and plays(SWITCH)[-len(tail) :] == tail


def test_the_agent_role_refuses_a_switch_onto_other_sources() -> None:
    """A switch runs the role's switch tasks: configuration and the service call, which
    requires this wheelhouse's marker (checked before anything is written) and fails
    with the message labctl recognises."""
    agent = next(p for p in plays(SWITCH) if "agent" in roles_of(p))
    inc = next(t["ansible.builtin.include_role"] for t in agent["tasks"]
               if t.get("ansible.builtin.include_role", {}).get("name") == "agent")  # fmt: skip
    assert inc.get("tasks_from") == "switch"
    role = PLAYBOOKS / "roles" / "agent" / "tasks"
    switch = yaml.safe_load((role / "switch.yml").read_text())
    assert [t.get("ansible.builtin.import_tasks") for t in switch][-1] == "run.yml"
    assert all("ansible.builtin.assert" in t for t in switch[:-1])  # no remote call before
    run = yaml.safe_load((role / "run.yml").read_text())
    svc = next(t for t in run if "ansible.builtin.include_role" in t)["vars"]
    assert "agent_marker" in svc["supervise_require"]
    assert "agent_switch_only" in svc["supervise_require"]
    assert svc["supervise_require_msg"].startswith(SWITCH_REFUSED)
    # nothing of the install is part of a switch, and the deploy runs the same run.yml
    main = yaml.safe_load((role / "main.yml").read_text())
    assert main[-1].get("ansible.builtin.import_tasks") == "run.yml"
    assert not any("agent_switch_only" in str(t) for t in main)


def test_only_a_refusal_on_every_failing_node_counts_as_refused() -> None:
    msg = SWITCH_REFUSED + " (wheelhouse abc is not installed): a mode switch only …"
    refused = Failure("c1-w1", "Run podlab-agent under supervisord", msg)
    other = Failure("c1-w2", "Run podlab-agent under supervisord", "runs but is not ready")
    assert switch_refused([refused, refused])
    assert not switch_refused([refused, other])
    assert not switch_refused([])


@pytest.mark.parametrize(("switch", "book"), [(False, SITE), (True, SWITCH)])
def test_the_request_names_its_playbook(tmp_path: Path, switch: bool, book: str) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text("all: {hosts: {}}\n")
    req = request_for("budget-unit", str(inv), {"podlab_mode": "bgp"}, switch=switch)
    assert req.playbook == book and (PLAYBOOKS / book).is_file()


def test_the_recap_knows_the_imported_plays() -> None:
    """Plays of mode-dependent.yml count as the deploy's own (else a complete run would
    be reported "incomplete": a play that never started)."""
    from harness.deploy.runner import play_names

    tail = [p["name"] for p in plays("mode-dependent.yml")]
    for book in (SITE, SWITCH):
        names = play_names(PLAYBOOKS / book)
        assert "" not in names and list(names[-len(tail) :]) == tail, names


# --- one mode per cluster (`--mode c1=vxlan,c2=udp`, ADR 0018 amendment 8) -----------

TWO = source_root() / "topologies" / "two-clusters.clab.yml"
INVENTORY = """all:
  vars: {podlab_backend: netns}
  children:
    c1:
      vars: {podlab_cluster: c1, podlab_mode: vxlan}
      hosts: {c1-w1: {}}
    c2:
      vars: {podlab_cluster: c2, podlab_mode: vxlan}
      hosts: {c2-w1: {}}
    routers:
      hosts: {router: {}}
"""


def test_the_per_cluster_mode_is_parsed_and_bad_items_are_one_line() -> None:
    from harness.deploy.deploy import parse_cluster_modes
    from harness.errors import UserError

    assert parse_cluster_modes("vxlan") is None  # one mode for every cluster
    assert parse_cluster_modes("c1=vxlan,c2=udp") == {"c1": "vxlan", "c2": "udp"}
    for bad, message in (
        ("geneve", "--mode geneve: unknown mode"),
        ("c1=vxlan,c2", "'c2' is not CLUSTER=MODE"),
        ("=vxlan", "'=vxlan' is not CLUSTER=MODE"),
        ("c1=geneve,c2=udp", "cluster c1: unknown mode 'geneve'"),
        ("c1=vxlan,c1=udp", "cluster c1 named twice"),
    ):
        with pytest.raises(UserError, match=message) as err:
            parse_cluster_modes(bad)
        assert len(str(err.value).splitlines()) == 1


def test_every_cluster_must_be_named_and_known(tmp_path: Path) -> None:
    from harness.errors import UserError

    inv = tmp_path / "inv.yml"
    inv.write_text(INVENTORY)
    for modes, message in (
        ({"c1": "udp"}, "no mode for cluster c2 .fix: name every cluster of lab pair-unit"),
        ({"c1": "udp", "c2": "ipip", "c3": "udp"}, "lab pair-unit has no cluster c3"),
    ):
        with pytest.raises(UserError, match=message):
            request_for("pair-unit", str(inv), {}, switch=True, cluster_modes=modes)


def test_a_mix_the_mesh_forbids_is_refused_by_validate_s_rules() -> None:
    from harness.deploy.deploy import check_plan_modes
    from harness.errors import UserError
    from harness.plan.build import load_plan

    plan = load_plan(TWO)
    check_plan_modes(plan, {"c1": "vxlan", "c2": "udp"}, None)  # one tunnel mesh: fine
    check_plan_modes(plan, {"c1": "calico-vxlan", "c2": "ipip"}, "wireguard")
    check_plan_modes(plan, {"c1": "bgp", "c2": "bgp"}, None)  # native: every cluster bgp
    with pytest.raises(UserError) as err:
        check_plan_modes(plan, {"c1": "bgp", "c2": "vxlan"}, None)
    (line,) = str(err.value).splitlines()
    assert line.startswith("podlab deploy two-clusters --mode c1=bgp,c2=vxlan: cluster c2")
    assert "tunnel routing in mesh mesh1 but cluster c1 (mode bgp) uses native routing" in line


def test_the_modes_go_into_each_cluster_group_and_no_extra_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.deploy import deploy as dep

    monkeypatch.setenv("PODLAB_HOME", str(tmp_path))  # the copy goes to its lab directory
    inv = tmp_path / "inv.yml"
    inv.write_text(INVENTORY)
    checked: list[tuple[str, dict[str, str], str | None]] = []

    def check(lab: str, modes: dict[str, str], enc: str | None) -> None:
        checked.append((lab, dict(modes), enc))

    monkeypatch.setattr(dep, "check_cluster_modes", check)
    req = request_for("pair-unit", str(inv), {"podlab_mode": "c1=ipip,c2=udp",
                      "podlab_encryption": "none"}, switch=True,
                      cluster_modes={"c1": "ipip", "c2": "udp"})  # fmt: skip
    assert checked == [("pair-unit", {"c1": "ipip", "c2": "udp"}, "none")]
    assert req.overrides == {"podlab_encryption": "none"}  # no podlab_mode extra var
    assert req.inventory.name == dep.MODES_INVENTORY and req.playbook == SWITCH
    groups = yaml.safe_load(req.inventory.read_text())["all"]["children"]
    assert groups["c1"]["vars"]["podlab_mode"] == "ipip"
    assert groups["c2"]["vars"]["podlab_mode"] == "udp"
    assert "podlab_mode" not in (groups["routers"].get("vars") or {})
    assert (
        yaml.safe_load(inv.read_text())["all"]["children"]["c1"]["vars"]["podlab_mode"] == "vxlan"
    )


def test_a_refused_mix_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.deploy import deploy as dep
    from harness.errors import UserError

    monkeypatch.setenv("PODLAB_HOME", str(tmp_path))
    inv = tmp_path / "inv.yml"
    inv.write_text(INVENTORY)
    lab_dir = dep.find("pair-unit").root
    assert lab_dir.is_relative_to(tmp_path)

    def refuse(lab: str, modes: object, enc: object) -> None:
        raise UserError("refused")

    monkeypatch.setattr(dep, "check_cluster_modes", refuse)
    with pytest.raises(UserError):
        request_for("pair-unit", str(inv), {}, cluster_modes={"c1": "bgp", "c2": "udp"})
    assert not (lab_dir / dep.MODES_INVENTORY).exists()


def test_each_run_states_its_vars_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ansible-runner reads env/extravars of an earlier run back: a run must not inherit
    the first deploy's podlab_mode (a per-cluster switch gives none)."""
    from harness.deploy import runner
    from harness.errors import LabError

    env = tmp_path / "env"
    env.mkdir()
    (env / "extravars").write_text('{"podlab_mode": "host-gw"}')
    (env / "envvars").write_text("{}")
    seen: list[bool] = []

    def fake_run(**kwargs: object) -> None:
        seen.append((env / "extravars").exists() or (env / "envvars").exists())
        raise RuntimeError("stop here")

    monkeypatch.setattr(runner.ansible_runner, "run", fake_run)
    with pytest.raises(LabError):
        runner.run_playbook(tmp_path / "x.yml", tmp_path / "inv.yml", tmp_path,
                            extravars={"podlab_encryption": "none"})  # fmt: skip
    assert seen == [False]
