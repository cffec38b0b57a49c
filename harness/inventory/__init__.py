"""LabPlan → an Ansible inventory, shaped like containerlab's ansible-inventory.yml.

Groups per cluster (named after it, with the cluster's settings as group vars)
and per role (``control_plane``, ``workers``, ``routers``, ``external_hosts``); host vars
carry the node's addresses. Ansible, testinfra and the host-side API read it;
the agent never does (it gets ``agent.yaml`` rendered from these vars).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from harness.plan import bgp
from harness.plan.model import LabPlan, NodePlan

ETCD_CLIENT_PORT = 2379
# VM guests may be emulated (TCG: every Python start takes seconds): the deploy
# waits longer for services there before it calls them failed.
SLOW_GUEST_VARS = {"agent_check_retries": 400, "kvstore_health_retries": 600, "supervise_wait": 180}
MESH_EXPORT_PORT = 32379  # each meshed cluster's export etcd (playbooks/roles/mesh)
# Role groups are plural so a node called ``router`` never shares a group's name.
ROLE_GROUPS = {
    "control-plane": "control_plane",
    "worker": "workers",
    "router": "routers",
    "host": "external_hosts",
}


def build_inventory(plan: LabPlan, lab_dir: Path, backend: str = "netns") -> dict[str, Any]:
    """The inventory as data; ``lab_dir`` holds the lab's ssh key and config."""
    lab_dir = lab_dir.resolve()
    children: dict[str, Any] = {}
    for cl in plan.clusters.values():
        cp = plan.nodes[cl.control_plane]
        cp_ip = cp.underlay.address.ip if cp.underlay and cp.underlay.address else cp.mgmt.ip
        children[cl.name] = {
            "vars": {
                "podlab_cluster": cl.name,
                "podlab_cluster_id": cl.id,
                "podlab_pod_cidr": str(cl.pod_cidr),
                "podlab_service_cidr": str(cl.service_cidr),
                "podlab_node_prefix": cl.node_prefix,
                "podlab_mode": cl.mode,
                "podlab_encryption": cl.encryption,
                "podlab_proxy_mode": cl.proxy_mode,
                "podlab_hollow_nodes": cl.hollow_nodes,
                "podlab_ipvs_scheduler": cp.label("podlab.ipvs-scheduler", "rr"),
                "podlab_etcd_endpoints": [f"http://{cp_ip}:{ETCD_CLIENT_PORT}"],
                "podlab_etcd_client_endpoint": f"http://{cp.mgmt.ip}:{ETCD_CLIENT_PORT}",
                "podlab_bgp_as": bgp.cluster_asn(cl),
                **_mesh_vars(plan, cl.name),
            },
            "hosts": {n: _cluster_host_vars(plan, n) for n in cl.nodes},
        }
    roles: dict[str, dict[str, Any]] = {}
    meshed = any(c.mesh for c in plan.clusters.values())
    for node in plan.nodes.values():
        group = ROLE_GROUPS[node.role]
        in_cluster = node.cluster is not None
        roles.setdefault(group, {"hosts": {}})["hosts"][node.name] = (
            {} if in_cluster else host_vars(node)
        )
        if node.is_router and meshed:
            roles[group]["hosts"][node.name]["podlab_bgp"] = bgp.router_bgp(plan, node.name)
    children.update(roles)
    slow = SLOW_GUEST_VARS if backend == "vm" else {}
    return {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(lab_dir / "id_ed25519"),
                "ansible_ssh_common_args": f"-F {lab_dir / 'ssh_config'}",
                "ansible_python_interpreter": "/usr/bin/python3",
                "podlab_lab": plan.name,
                "podlab_backend": backend,
                "podlab_lab_dir": str(lab_dir),
                **slow,
            },
            "children": children,
        }
    }


def _export_endpoint(plan: LabPlan, cluster: str) -> str:
    cp = plan.nodes[plan.clusters[cluster].control_plane]
    ip = cp.underlay.address.ip if cp.underlay and cp.underlay.address else cp.mgmt.ip
    return f"https://{ip}:{MESH_EXPORT_PORT}"


def _mesh_vars(plan: LabPlan, cluster: str) -> dict[str, Any]:
    """``podlab_mesh`` and the other clusters of the mesh with their export etcds."""
    mesh = plan.clusters[cluster].mesh
    if not mesh:
        return {}
    peers = [
        {"name": c.name, "endpoint": _export_endpoint(plan, c.name)}
        for c in plan.clusters.values()
        if c.mesh == mesh and c.name != cluster
    ]
    return {
        "podlab_mesh": mesh,
        "podlab_mesh_export_endpoint": _export_endpoint(plan, cluster),
        "podlab_mesh_peers": peers,
    }


def _cluster_host_vars(plan: LabPlan, node: str) -> dict[str, Any]:
    """A cluster node's vars; in a mesh also the routers it peers with when the mesh
    routes natively (bgp): ``podlab_bgp_routers`` (docs/mesh.md, ADR 0015)."""
    out = host_vars(plan.nodes[node])
    routers = bgp.node_routers(plan, node)
    if routers:
        out["podlab_bgp_routers"] = routers
    return out


def host_vars(node: NodePlan) -> dict[str, Any]:
    """Per-host variables: where to reach the node and its underlay facts."""
    out: dict[str, Any] = {
        "ansible_host": str(node.mgmt.ip),
        "podlab_node": node.name,
        "podlab_role": node.role,
        "podlab_mgmt_address": str(node.mgmt.ip),
        "podlab_route_reflector": node.route_reflector,
    }
    if node.underlay and node.underlay.address:
        out.update(
            podlab_underlay_interface=node.underlay.name,
            podlab_underlay_address=str(node.underlay.address.ip),
            podlab_underlay_prefix=node.underlay.address.network.prefixlen,
            podlab_underlay_mtu=node.underlay.mtu,
            podlab_segment=node.underlay.segment,
        )
    return out


def project_home() -> Path:
    """The directory holding ``.podlab/`` and ``inventories/``: $PODLAB_HOME or the cwd."""
    return Path(os.environ.get("PODLAB_HOME") or Path.cwd()).resolve()


def inventory_path(lab: str, repo_root: Path) -> Path:
    return repo_root / "inventories" / f"{lab}.yml"


def write_inventory(plan: LabPlan, lab_dir: Path, repo_root: Path, backend: str = "netns") -> Path:
    """Write ``inventories/<lab>.yml`` (atomically) and return its path."""
    path = inventory_path(plan.name, repo_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Generated by `podlab up` from {plan.source}; do not edit (it is rewritten).\n"
    tmp = path.with_suffix(".yml.tmp")
    tmp.write_text(
        header
        + yaml.safe_dump(
            build_inventory(plan, lab_dir, backend), sort_keys=False, default_flow_style=False
        )
    )
    tmp.replace(path)
    return path


def load_inventory(path: Path) -> dict[str, Any]:
    """Read an inventory written by ``write_inventory`` (or by hand, same shape)."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "all" not in data:
        from harness.errors import UserError

        raise UserError(f"{path}: not an Ansible YAML inventory (no top-level 'all:')")
    return data
