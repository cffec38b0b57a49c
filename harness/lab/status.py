"""What labs exist on this machine and in what state, as stable data.

``podlab status --format json`` prints ``lab_status()`` as is; its keys are a
contract (schema ``version`` 1): add keys, never rename or remove them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import UserError
from harness.lab import netns, state, sysns
from harness.lab.state import LabPaths, Ledger

STATUS_VERSION = 1


def node_state(node: state.NodeState) -> str:
    """``up`` (holder and sshd run; a VM's qemu runs), ``degraded`` (holder only) or ``down``."""
    if not node.pid or not sysns.alive(node.pid, node.start):
        return "down"
    if node.is_vm:
        return "up"
    if node.sshd_pid and sysns.alive(node.sshd_pid, node.sshd_start):
        return "up"
    return "degraded"


def lab_state(ledger: Ledger) -> str:
    """``up``, ``building``, ``degraded`` or ``stale`` (a crashed up or a dead lab)."""
    if netns.is_building(ledger):
        return "building"
    if ledger.status == "up" and netns.is_alive(ledger):
        return "up"
    if ledger.status == "up" and any(node_state(n) != "down" for n in ledger.nodes.values()):
        return "degraded"
    return "stale"


def lab_status(only: str | None = None) -> dict[str, Any]:
    """``{"version": 1, "labs": [{lab, state, source, digest, lab_dir, mgmt_subnet,
    mgmt_bridge, backend, image, nodes: [{node, role, cluster, mgmt, underlay, netns, pid,
    sshd_pid, state, accel, emulated, kernel, memory_mb, cpus}]}]}``."""
    labs = []
    for name, paths in state.known_labs().items():
        if only and name != only:
            continue
        try:
            ledger = Ledger.load(paths)
        except UserError:
            continue
        labs.append(_one(ledger, paths))
    return {"version": STATUS_VERSION, "labs": labs}


def _one(ledger: Ledger, paths: LabPaths) -> dict[str, Any]:
    return {
        "lab": ledger.lab,
        "state": lab_state(ledger),
        "backend": ledger.backend,
        "image": ledger.image,
        "source": ledger.source,
        "digest": ledger.digest,
        "lab_dir": str(paths.root),
        "mgmt_subnet": ledger.mgmt_subnet,
        "mgmt_bridge": ledger.mgmt_bridge,
        "nodes": [
            {
                "node": name,
                "clab_name": n.clab_name or None,  # the file's name, when "node" is derived
                "role": n.role,
                "cluster": n.cluster,
                "mgmt": n.mgmt.split("/")[0],
                "underlay": n.underlay,
                "netns": n.netns,
                "pid": n.pid,
                "sshd_pid": n.sshd_pid,
                "state": node_state(n),
                # vm backend: how the guest runs; "emulated" figures are never
                # comparable with native ones (see docs/vm-backend.md).
                "accel": n.vm_accel or None,
                "emulated": n.vm_accel == "tcg" if n.is_vm else None,
                "kernel": n.vm_kernel or None,
                "memory_mb": n.vm_memory_mb or None,
                "cpus": n.vm_cpus or None,
            }
            for name, n in ledger.nodes.items()
        ],
    }


@dataclass(frozen=True)
class NodeRef:
    """A node located in a lab: enough to enter it or ssh to it."""

    lab: str
    node: str
    paths: LabPaths
    ledger: Ledger

    @property
    def pid(self) -> int:
        n = self.ledger.nodes[self.node]
        if not n.pid or not sysns.alive(n.pid, n.start):
            raise UserError(f"node {self.node} of lab {self.lab} is not running")
        return n.pid


def find_node(node: str, lab: str | None = None) -> NodeRef:
    """Locate ``node``; ``lab`` may be omitted when exactly one lab has such a node.

    Both may be given as the file writes them (``PC1``, ``K8s_Lab``)."""
    from harness.topology.load import derived_name

    lab = derived_name(lab) if lab else None
    matches = []
    for name, paths in state.known_labs().items():
        if lab and name != lab:
            continue
        try:
            ledger = Ledger.load(paths)
        except UserError:
            continue
        if node in ledger.nodes:
            matches.append(NodeRef(name, node, paths, ledger))
            continue
        derived = [k for k, n in ledger.nodes.items() if n.clab_name == node]
        if derived:  # the file's name (PC1) finds the node podlab calls pc1
            matches.append(NodeRef(name, derived[0], paths, ledger))
    if not matches:
        where = f"lab {lab}" if lab else "any lab"
        raise UserError(f"no node {node} in {where} (see `podlab status`)")
    if len(matches) > 1:
        labs = ", ".join(m.lab for m in matches)
        raise UserError(f"node {node} exists in several labs ({labs}); pick one with --lab")
    return matches[0]


def only_lab() -> str:
    """The single lab on this machine, for verbs whose lab argument is optional."""
    labs = list(state.known_labs())
    if len(labs) != 1:
        have = ", ".join(labs) or "none"
        raise UserError(f"name the lab (labs here: {have})")
    return labs[0]
