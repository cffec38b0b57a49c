"""Topology → LabPlan: segments, addresses, clusters and routes, all decided here.

Pure functions over frozen data. Every problem is collected with its location
so ``podlab validate`` prints them all in one run.
"""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from harness.errors import Collector
from harness.plan.addressing import assign_segments, mgmt_plan
from harness.plan.clusters import CLUSTER_ROLES, build_clusters, node_role
from harness.plan.model import Interface, LabPlan, NodePlan, Segment
from harness.plan.routing import static_routes
from harness.topology import Topology, load_topology

__all__ = ["build_plan", "load_plan"]


def load_plan(path: str | Path) -> LabPlan:
    """Load a topology file and build its plan; raise UserError on any problem."""
    c = Collector(str(path))
    return build_plan(load_topology(path, c), c)


def build_plan(topo: Topology, c: Collector | None = None) -> LabPlan:
    """Derive the full lab plan from a structurally valid topology."""
    c = c or Collector(topo.path)
    segments, addresses = assign_segments(topo, c)
    roles = {n.name: node_role(n, topo, c) for n in topo.nodes.values() if n.kind == "linux"}
    clusters = build_clusters(topo, roles, segments, c)
    mgmt_subnet, gateway, mgmt = mgmt_plan(topo, c)
    _check_overlaps(topo, segments, clusters, mgmt_subnet, c)
    c.raise_if_any()
    ifaces: dict[str, list[Interface]] = {name: [] for name in roles}
    for seg in segments.values():
        for node, iface in seg.members:
            ifaces[node].append(Interface(iface, seg.name, addresses[(node, iface)], seg.mtu))
    for node in ifaces:
        ifaces[node].sort(key=lambda i: _iface_order(i.name))
    routes = static_routes(segments, ifaces, {n for n, r in roles.items() if r == "router"}, c)
    c.raise_if_any()
    nodes = {}
    for name, spec in topo.nodes.items():
        if spec.kind != "linux":
            continue
        nodes[name] = NodePlan(
            name=name,
            role=roles[name],
            cluster=spec.labels.get("podlab.cluster") if roles[name] in CLUSTER_ROLES else None,
            mgmt=mgmt[name],
            interfaces=tuple(ifaces[name]),
            routes=tuple(routes.get(name, ())),
            labels=tuple(sorted(spec.labels.items())),
            route_reflector=spec.labels.get("podlab.route-reflector", "false").lower() == "true",
        )
    bridges = tuple(n for n, s in topo.nodes.items() if s.kind == "bridge")
    digest = hashlib.sha256(topo.digest.encode()).hexdigest()[:16]
    return LabPlan(
        topo.name, topo.path, digest, mgmt_subnet, gateway, nodes, segments, clusters, bridges
    )


def _iface_order(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return head, int(tail) if tail else -1


def _check_overlaps(
    topo: Topology,
    segments: dict[str, Segment],
    clusters: dict,
    mgmt: IPv4Network | None,
    c: Collector,
) -> None:
    """Pod, service, underlay and management ranges must not overlap anywhere."""
    ranges: list[tuple[str, IPv4Network, int | None]] = []
    for cl in clusters.values():
        ranges.append((f"cluster {cl.name} pod CIDR", cl.pod_cidr, None))
        ranges.append((f"cluster {cl.name} service CIDR", cl.service_cidr, None))
    for seg in segments.values():
        ranges.append((f"segment {seg.name} subnet", seg.subnet, None))
    if mgmt is not None:
        ranges.append(("management subnet", mgmt, topo.line("mgmt")))
    for i, (a_name, a, _) in enumerate(ranges):
        for b_name, b, line in ranges[i + 1 :]:
            if a.overlaps(b):
                hint = (
                    "ClusterMesh needs unique pod CIDRs: give each cluster its own podlab.pod-cidr"
                    if "pod" in a_name and "pod" in b_name
                    else "choose non-overlapping ranges"
                )
                c.add("address plan", f"{a_name} {a} overlaps {b_name} {b}", hint, line)


def underlay_of(plan: LabPlan, node: str) -> IPv4Interface | None:
    """The underlay address of ``node`` (its first underlay interface)."""
    u = plan.nodes[node].underlay
    return u.address if u else None
