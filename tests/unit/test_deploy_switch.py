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
