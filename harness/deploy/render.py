"""The deploy's own files and services of one node, rendered without running a deploy.

``podlab export clab`` needs, for each cluster node, what ``podlab deploy`` would
put there: etcd's, the agent's and the controller manager's configuration, the
supervisord programs that run them, the kernel settings and directories of the
``common`` role, and the health checks the deploy waits on. To stay one thing,
not a copy, everything is read from the playbooks themselves (role defaults, the
``vars:`` of the render and ``supervise`` tasks, the templates) and rendered with
Ansible's own templating (``lookup('template', …)``) over the inventory podlab
generates (``harness.inventory.build_inventory``). A changed template or
setting in ``playbooks/`` changes the export with it.

What the deploy does that a file cannot carry (installing the wheelhouse, the
mesh's PKI and export etcd, hollow nodes, BGP on routers of a native mesh) is
named by ``not_carried``; docs/containerlab.md says what a user does about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.inventory import build_inventory
from harness.plan.model import LabPlan, NodePlan

ROLES = Path(__file__).resolve().parents[2] / "playbooks" / "roles"
# What ``podlab_backend`` says in an exported lab: not ``netns`` (the node's
# network namespace is its own, as on a VM: the agent owns it; /etc is private).
BACKEND = "containerlab"
# (role, the supervised program it runs, the node roles that run it), in start order:
# etcd first, then the agent, then the controller manager (playbooks/site.yml)
SERVICES = (
    ("kvstore", "etcd", ("control-plane",)),
    ("agent", "podlab-agent", ("control-plane", "worker")),
    ("controllers", "podlab-controllers", ("control-plane",)),
)


@dataclass(frozen=True)
class NodeServices:
    """A cluster node's part of the deploy, as data."""

    dirs: tuple[str, ...]  # common_dirs
    sysctls: tuple[tuple[str, str], ...]  # common_sysctls
    files: dict[str, str]  # path in the node -> content (configs, supervisord files)
    supervisor_conf: str  # supervisord's configuration file (start: supervisord -c …)
    checks: tuple[tuple[str, ...], ...]  # argv that succeed once each service answers
    packages: tuple[str, ...]  # Debian packages the node's image must carry


def not_carried(plan: LabPlan) -> list[str]:
    """Parts of ``podlab deploy`` the exported file does not carry, one line each."""
    out = []
    for c in plan.clusters.values():
        if c.mesh:
            out.append(f"cluster {c.name}: mesh {c.mesh} (export etcd, PKI, podlab-mesh)")
        if c.hollow_nodes:
            out.append(f"cluster {c.name}: {c.hollow_nodes} hollow nodes")
    if any(c.mesh and c.mesh_routing == "native" for c in plan.clusters.values()):
        out.append("routers: BIRD carrying the native mesh's pod routes (playbooks/roles/router)")
    return out


def node_services(plan: LabPlan, node: NodePlan, backend: str = BACKEND) -> NodeServices | None:
    """What the deploy puts on ``node`` (None for a router or host: ``common`` only
    installs packages there; a native mesh's BGP on routers is in ``not_carried``).

    ``backend`` is the inventory's ``podlab_backend``; ``netns`` gives what a deploy
    writes on a netns lab (tests/integration/test_deploy.py compares the two).
    """
    if node.cluster is None:
        return None
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    env = _variables(plan, node, backend)
    templar = Templar(loader=DataLoader(), variables=_trust(env, trust_as_template))

    def render(value: Any, extra: Mapping[str, Any] | None = None) -> Any:
        if extra:
            templar.available_variables = _trust({**env, **extra}, trust_as_template)
        out = templar.template(trust_as_template(value) if isinstance(value, str) else value)
        if extra:
            templar.available_variables = _trust(env, trust_as_template)
        return out

    def template(name: str, extra: Mapping[str, Any] | None = None) -> str:
        more = {**(extra or {}), "ansible_search_path": [str(ROLES / "supervise")]}
        return str(render(f"{{{{ lookup('template', {name!r}) }}}}", more))

    files: dict[str, str] = {}
    checks: list[tuple[str, ...]] = []
    for role, program, roles in SERVICES:
        if node.role not in roles:
            continue
        tasks = role_tasks(role)
        fact = _task(tasks, "set_fact")  # "<role>_files": {config path: its template}
        extra = {**(fact.get("vars") or {}), "ansible_search_path": [str(ROLES / role)]}
        for expr in fact["ansible.builtin.set_fact"].values():
            files.update({str(k): str(v) for k, v in render(expr, extra).items()})
        run = _task(tasks, "include_role", program=program)["vars"]
        conf = {"supervise_program": program, "supervise_command": run["supervise_command"]}
        conf_path = str(render(f"{{{{ supervise_dir }}}}/conf.d/{program}.conf"))
        files[conf_path] = template("program.conf.j2", conf)
        check = _task(tasks, "command", optional=True)
        if check:
            checks.append(tuple(str(render(a)) for a in check["ansible.builtin.command"]["argv"]))
    supervisor_conf = str(render("{{ supervise_conf }}"))
    files[supervisor_conf] = template("supervisord.conf.j2")
    packages = list(env["common_packages"])
    if node.role == "control-plane":
        packages += env["common_control_plane_packages"]
    return NodeServices(
        dirs=tuple(env["common_dirs"]),
        sysctls=tuple((str(k), str(v)) for k, v in env["common_sysctls"].items()),
        files=files,
        supervisor_conf=supervisor_conf,
        checks=tuple(checks),
        packages=tuple(packages),
    )


def _variables(plan: LabPlan, node: NodePlan, backend: str) -> dict[str, Any]:
    """Role defaults, then the inventory's all → cluster → host vars (Ansible's order
    for these sources), with supervisord as the supervisor (no systemd in a container)."""
    out: dict[str, Any] = {}
    for role in ("common", "supervise", "kvstore", "agent", "controllers"):
        out.update(yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {})
    inv = build_inventory(plan, Path("/nonexistent"), backend=backend)["all"]
    out.update(inv["vars"])
    group = inv["children"][node.cluster]
    out.update(group["vars"])
    out.update(group["hosts"][node.name])
    out.update(inventory_hostname=node.name, podlab_supervisor="supervisord")
    out["supervise_kind"] = "supervisord"
    out["group_names"] = [
        node.cluster,
        "control_plane" if node.role == "control-plane" else "workers",
    ]
    return out


def role_tasks(role: str, name: str = "main.yml") -> list[dict[str, Any]]:
    """A role's task file with its ``import_tasks`` expanded in place (the agent role's
    configuration and service live in run.yml, shared by the deploy and a switch)."""
    out: list[dict[str, Any]] = []
    for task in yaml.safe_load((ROLES / role / "tasks" / name).read_text()) or []:
        imported = task.get("ansible.builtin.import_tasks")
        out += role_tasks(role, imported) if imported else [task]
    return out


def _task(
    tasks: list[dict[str, Any]], module: str, program: str = "", optional: bool = False
) -> Any:
    """The first task using ``module`` (for include_role: the one running ``program``)."""
    for task in tasks:
        body = task.get(f"ansible.builtin.{module}")
        if body is None:
            continue
        if program and (task.get("vars") or {}).get("supervise_program") != program:
            continue
        return task
    if optional:
        return None
    raise LookupError(f"no {module} task{' for ' + program if program else ''} in the role")


def _trust(value: Any, trust: Any) -> Any:
    """Mark the playbooks' own strings as templates (Ansible ≥ 2.19 renders only
    trusted strings; these come from podlab's repository, as when Ansible reads them)."""
    if isinstance(value, str):
        return trust(value)
    if isinstance(value, dict):
        return {k: _trust(v, trust) for k, v in value.items()}
    if isinstance(value, list):
        return [_trust(v, trust) for v in value]
    return value
