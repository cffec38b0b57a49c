"""``podlab deploy``: wheelhouse → ansible-runner → DeployResult.

The same function deploys a netns lab (its generated inventory) and existing
machines (``--inventory FILE``, the VM path): the playbooks cannot tell them
apart except through ``podlab_backend``. Overrides (``--mode`` …) become extra
vars, which beat every inventory variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

import harness
from harness.deploy import meshpki
from harness.deploy.runner import DeployEvent, DeployResult, Failure, run_playbook
from harness.deploy.wheel import Wheelhouse, ensure_wheelhouse
from harness.errors import LabError, UserError
from harness.inventory import inventory_path, project_home
from harness.lab.state import find

if TYPE_CHECKING:
    from harness.plan.model import LabPlan

SITE = "site.yml"
# The mode switch of a deployed lab (``--switch``): the agents' configuration and
# restart plus the mode-dependent plays, nothing installed (playbooks/switch.yml).
SWITCH = "switch.yml"
# How the agent's service call refuses a switch onto sources a node does not run
# (roles/agent/tasks/run.yml, supervise_require_msg): the start of its message.
SWITCH_REFUSED = "this node does not run the sources being deployed"
# Outside every clone, keyed by the sources' digest, so a clean clone of an
# already-deployed tree reuses it (its build took ~4 s of each clean-clone run).
WHEELHOUSE_CACHE = "/var/cache/podlab/wheelhouses"
MAX_FORKS = 64


@dataclass(frozen=True)
class DeployRequest:
    """What to deploy where: the lab, its inventory, overrides and an optional --limit."""

    lab: str
    inventory: Path
    lab_dir: Path
    overrides: Mapping[str, str]  # inventory variable -> value, e.g. podlab_mode: bgp
    limit: str | None = None
    mesh_ca: Path | None = None  # --mesh-ca: another lab's mesh directory (shared CA)
    switch: bool = False  # only switch the mode of a deployed lab (playbooks/switch.yml)

    @property
    def playbook(self) -> str:
        return SWITCH if self.switch else SITE


def source_root() -> Path:
    """The podlab checkout holding ``playbooks/`` and ``pyproject.toml``."""
    return Path(harness.__file__).resolve().parents[1]


def wheelhouse_cache() -> Path:
    """Where wheelhouses are built and kept: ``$PODLAB_WHEELHOUSE_CACHE`` or
    ``/var/cache/podlab/wheelhouses`` (shared by clones: the digest names the content)."""
    return Path(os.environ.get("PODLAB_WHEELHOUSE_CACHE") or WHEELHOUSE_CACHE)


def request_for(
    lab: str,
    inventory: str | None,
    overrides: Mapping[str, str | None],
    limit: str | None = None,
    switch: bool = False,
    cluster_modes: Mapping[str, str] | None = None,
) -> DeployRequest:
    """Resolve the inventory and lab directory; refuse a missing inventory up front.

    ``cluster_modes`` (``--mode c1=vxlan,c2=udp``): one mode per cluster, every cluster
    of the lab named. A mode is then no extra var (those beat every host's variable) but
    each cluster group's ``podlab_mode`` in a copy of the inventory the one Ansible run
    reads (``inventory-modes.yml`` in the lab directory), after the lab's clusters with
    those modes passed the mesh rules ``podlab validate`` applies (docs/mesh.md).
    """
    inv = Path(inventory).resolve() if inventory else inventory_path(lab, project_home())
    if not inv.is_file():
        hint = "bring the lab up with `podlab up FILE`, or pass --inventory FILE"
        raise UserError(f"no inventory for lab {lab!r} at {inv} (fix: {hint})")
    lab_dir = find(lab).root  # a registered netns lab's, else .podlab/<lab>/
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if cluster_modes:
        chosen.pop("podlab_mode", None)
        data = _inventory_with_modes(inv, lab, cluster_modes)
        check_cluster_modes(lab, cluster_modes, chosen.get("podlab_encryption"))
        lab_dir.mkdir(parents=True, exist_ok=True)
        inv = lab_dir / MODES_INVENTORY
        inv.write_text(
            "# Written by `podlab deploy --mode CLUSTER=MODE,…` from the lab's inventory "
            "(per-cluster podlab_mode); rewritten by the next such deploy.\n"
            + yaml.safe_dump(data, sort_keys=False)
        )
    _refuse_ipvs_on_host_kernel(inv, chosen)
    return DeployRequest(lab, inv, lab_dir, chosen, limit, switch=switch)


# The inventory a per-cluster --mode deploys with (request_for), in the lab directory.
MODES_INVENTORY = "inventory-modes.yml"


def parse_cluster_modes(text: str) -> dict[str, str] | None:
    """``--mode``'s per-cluster form ``c1=vxlan,c2=udp`` as {cluster: mode}; None for a
    plain MODE (every cluster). A malformed item or an unknown mode: one line, exit 2."""
    from harness.plan.model import MODES

    if "=" not in text:
        if text not in MODES:
            raise UserError(f"--mode {text}: unknown mode (use one of: {', '.join(MODES)}, "
                            "or CLUSTER=MODE,… for one mode per cluster)")  # fmt: skip
        return None
    out: dict[str, str] = {}
    for item in text.split(","):
        cluster, eq, mode = (part.strip() for part in item.partition("="))
        if not eq or not cluster or not mode:
            raise UserError(f"--mode {text}: {item!r} is not CLUSTER=MODE "
                            "(e.g. --mode c1=vxlan,c2=udp)")  # fmt: skip
        if mode not in MODES:
            raise UserError(f"--mode {text}: cluster {cluster}: unknown mode {mode!r} "
                            f"(use one of: {', '.join(MODES)})")  # fmt: skip
        if cluster in out:
            raise UserError(f"--mode {text}: cluster {cluster} named twice")
        out[cluster] = mode
    return out


def _inventory_with_modes(inv: Path, lab: str, modes: Mapping[str, str]) -> dict[str, Any]:
    """The inventory's data with each cluster group's podlab_mode set; every cluster of the
    inventory must be named (a cluster left out would get its topology mode, not the one
    it runs)."""
    data = yaml.safe_load(inv.read_text()) or {}
    groups = ((data.get("all") or {}).get("children") or {}) if isinstance(data, dict) else {}
    clusters = {
        str((g.get("vars") or {}).get("podlab_cluster")): g
        for g in groups.values()
        if isinstance(g, dict) and (g.get("vars") or {}).get("podlab_cluster")
    }
    given = ",".join(f"{c}={m}" for c, m in modes.items())
    names = ", ".join(clusters) or "none"
    unknown = [c for c in modes if c not in clusters]
    if unknown:
        raise UserError(f"--mode {given}: lab {lab} has no cluster {unknown[0]} "
                        f"(its clusters: {names})")  # fmt: skip
    missing = [c for c in clusters if c not in modes]
    if missing:
        raise UserError(f"--mode {given}: no mode for cluster {missing[0]} (fix: name every "
                        f"cluster of lab {lab} ({names}), or give one MODE for all)")  # fmt: skip
    for cluster, group in clusters.items():
        group["vars"]["podlab_mode"] = modes[cluster]
    return data  # type: ignore[no-any-return]


def check_cluster_modes(lab: str, modes: Mapping[str, str], encryption: str | None) -> None:
    """Refuse modes that break a mesh rule of the lab (docs/mesh.md) before anything
    changes: the lab's plan with these modes through ``podlab validate``'s mesh check,
    one line per problem, located at the --mode argument."""
    from harness.lab.state import Ledger
    from harness.plan.build import load_plan

    paths = find(lab)
    if not paths.state.exists():
        raise UserError(f"--mode CLUSTER=MODE,…: lab {lab!r} is not up (its topology's mesh "
                        "rules decide which modes may mix; fix: `podlab up FILE`)")  # fmt: skip
    check_plan_modes(load_plan(Ledger.load(paths).source), modes, encryption)


def check_plan_modes(plan: LabPlan, modes: Mapping[str, str], encryption: str | None) -> None:
    """``check_cluster_modes`` on a lab's plan: its clusters with ``modes`` (and the
    ``encryption`` override) through the mesh rules; one line per problem."""
    import dataclasses as dc

    from harness.errors import Collector
    from harness.plan.mesh import check_meshes

    lab = plan.name
    clusters = {
        name: dc.replace(cl, mode=modes.get(name, cl.mode), encryption=encryption or cl.encryption)
        for name, cl in plan.clusters.items()
    }
    given = ",".join(f"{c}={m}" for c, m in modes.items())
    collector = Collector(f"podlab deploy {lab} --mode {given}")
    check_meshes(clusters, {}, collector)
    collector.raise_if_any()


def switch_refused(failures: Sequence[Failure]) -> bool:
    """Whether a switch failed only because nodes run other sources (then a full deploy)."""
    return bool(failures) and all(f.message.startswith(SWITCH_REFUSED) for f in failures)


def _refuse_ipvs_on_host_kernel(inventory: Path, chosen: Mapping[str, str]) -> None:
    """Proxy mode ipvs on netns nodes needs the host kernel's IPVS: refuse up front."""
    try:
        data = yaml.safe_load(inventory.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return
    top = (data.get("all") or {}) if isinstance(data, dict) else {}
    if (top.get("vars") or {}).get("podlab_backend") != "netns":
        return
    groups = (top.get("children") or {}).values()
    proxies = {str((g or {}).get("vars", {}).get("podlab_proxy_mode")) for g in groups}
    if chosen.get("podlab_proxy_mode", "ipvs" if "ipvs" in proxies else "") != "ipvs":
        return
    from harness.lab import preflight

    check = preflight.ipvs_available()
    if not check.ok:
        raise UserError([preflight.ipvs_refusal(check.detail)])


def _timeout_s(inventory: Path) -> int:
    """The whole playbook's time limit: 30 min, 2 h for VM guests (emulated ones
    on a busy machine run every Ansible task 10–30x slower)."""
    try:
        data = yaml.safe_load(inventory.read_text()) or {}
        backend = ((data.get("all") or {}).get("vars") or {}).get("podlab_backend")
    except (OSError, yaml.YAMLError, AttributeError):
        backend = None
    return 7200 if backend == "vm" else 1800


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def count_hosts(inventory: Path) -> int:
    """Hosts in a YAML inventory (for forks = number of hosts); 0 if it cannot tell."""
    try:
        data = yaml.safe_load(inventory.read_text())
    except (OSError, yaml.YAMLError):
        return 0
    hosts: set[str] = set()

    def walk(group: Any) -> None:
        if not isinstance(group, dict):
            return
        if isinstance(group.get("hosts"), dict):
            hosts.update(group["hosts"])
        for child in (group.get("children") or {}).values():
            walk(child)

    for top in (data or {}).values() if isinstance(data, dict) else ():
        walk(top)
    return len(hosts)


def extra_vars(wheelhouse: Wheelhouse, overrides: Mapping[str, str]) -> dict[str, Any]:
    """Extra vars for site.yml: where the wheelhouse is, plus the user's overrides."""
    return {
        "podlab_wheelhouse_archive": str(wheelhouse.archive),
        "podlab_wheelhouse_digest": wheelhouse.digest,
        "podlab_wheel": wheelhouse.wheel,
        "podlab_pip_wheel": wheelhouse.pip_wheel,
        "podlab_node_requirements": list(wheelhouse.requirements),
        # netns nodes compare their namespace with ours and refuse to touch it.
        "podlab_controller_netns": os.readlink("/proc/self/ns/net"),
        **overrides,
    }


def deploy(
    req: DeployRequest,
    on_event: Callable[[DeployEvent], None] | None = None,
    forks: int | None = None,
    wheelhouse: Wheelhouse | None = None,
) -> DeployResult:
    """Build (or reuse) the wheelhouse and run site.yml (switch.yml for ``req.switch``);
    the result names every failure.

    Pass ``wheelhouse`` to deploy a wheelhouse built earlier (a benchmark or test
    that must ship the same sources on every run while the tree is being edited).
    """
    root = source_root()
    playbooks = root / "playbooks"
    if not (playbooks / req.playbook).is_file() or not (root / "pyproject.toml").is_file():
        raise UserError(
            f"podlab deploy needs a source checkout with playbooks/{req.playbook} "
            f"(looked in {root})"
        )
    wheelhouse = wheelhouse or ensure_wheelhouse(root, wheelhouse_cache())
    if not wheelhouse.archive.is_file():
        raise LabError(f"wheelhouse archive {wheelhouse.archive} is gone (pruned?): deploy again")
    # ansible-runner's env and artifacts: one directory per --limit, so that deploys of
    # one lab limited to different clusters may run at the same time (a conformance
    # run per cluster)
    deploy_dir = req.lab_dir / ("deploy" if not req.limit else f"deploy-{_safe(req.limit)}")
    control_dir = req.lab_dir / "cp"  # ssh ControlPath sockets: per lab, short paths
    control_dir.mkdir(parents=True, exist_ok=True)
    nhosts = count_hosts(req.inventory)
    extra = extra_vars(wheelhouse, req.overrides)
    pki = meshpki.prepare(yaml.safe_load(req.inventory.read_text()) or {}, req.lab_dir, req.mesh_ca)
    if pki is not None:
        extra["podlab_mesh_pki_dir"] = str(pki)
    return run_playbook(
        playbooks / req.playbook,
        req.inventory,
        deploy_dir,
        extravars=extra,
        limit=req.limit,
        forks=forks or max(1, min(nhosts or 10, MAX_FORKS)),
        envvars={
            "ANSIBLE_CONFIG": str(playbooks / "ansible.cfg"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
            "ANSIBLE_ROLES_PATH": str(playbooks / "roles"),
        },
        on_event=on_event,
        timeout_s=_timeout_s(req.inventory),
    )
