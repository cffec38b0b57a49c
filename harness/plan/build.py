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
from harness.plan.bgp import check_native_routers
from harness.plan.clusters import CLUSTER_ROLES, build_clusters, node_role
from harness.plan.mesh import pod_overlap_hint
from harness.plan.model import ClusterPlan, Interface, LabPlan, NodePlan, Segment
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
    order, delays = exec_order(topo, c)
    mgmt_subnet, gateway, mgmt = mgmt_plan(topo, c)
    _check_overlaps(topo, segments, clusters, mgmt_subnet, c)
    c.raise_if_any()
    ifaces: dict[str, list[Interface]] = {name: [] for name in roles}
    for seg in segments.values():
        for node, iface in seg.members:
            ifaces[node].append(Interface(iface, seg.name, addresses[(node, iface)], seg.mtu))
    for node in ifaces:
        ifaces[node].sort(key=lambda i: _iface_order(i.name))
    routers = {n for n, r in roles.items() if r == "router"}
    # a plain containerlab lab gets no routes either: containerlab adds none
    routes = {} if topo.plain else static_routes(segments, ifaces, routers, c)
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
            clab_name=spec.clab_name,
            exec=spec.exec,
            env=tuple(sorted((spec.env or {}).items())),
            exec_lines=spec.exec_lines,
            binds=spec.binds,
            exec_delay=delays.get(name, 0),
            waits=spec.waits,
            startup_delay=spec.startup_delay,
        )
    bridges = tuple(n for n, s in topo.nodes.items() if s.kind == "bridge")
    digest = hashlib.sha256(topo.digest.encode()).hexdigest()[:16]
    plan = LabPlan(
        topo.name,
        topo.path,
        digest,
        mgmt_subnet,
        gateway,
        nodes,
        segments,
        clusters,
        bridges,
        topo.regime,
        topo.clab_name,
        order,
    )
    check_native_routers(plan, c, {n: s.line for n, s in topo.nodes.items()})
    c.raise_if_any()
    return plan


def exec_order(topo: Topology, c: Collector) -> tuple[tuple[str, ...], dict[str, int]]:
    """Nodes in the order their ``exec:`` runs, and each node's delay before it starts.

    A node comes after the nodes its stages' ``wait-for`` names; its delay is its own
    ``startup-delay`` or the longer one of a node it waits for (it cannot start
    before them). Then the order is sorted by delay (stable, so file order and
    wait-for order hold among equal delays, and a node's dependencies never have a
    longer delay): commands run one node at a time, and a node with no delay is not
    held up behind a delayed one. Refuses a wait-for naming no node of the file, and
    a cycle (naming its nodes).
    """
    alias = {n.shown: n.name for n in topo.nodes.values()} | {n: n for n in topo.nodes}
    deps: dict[str, list[str]] = {}
    for n in topo.nodes.values():
        if n.kind != "linux":
            continue
        deps[n.name] = []
        for other in n.wait_for:
            if alias.get(other) not in topo.nodes or topo.nodes[alias[other]].kind != "linux":
                c.add(
                    f"node {n.shown} stages",
                    f"wait-for names {other!r}, not a linux node of this file",
                    "name a node under topology.nodes",
                    topo.line("topology", "nodes", n.shown, "stages"),
                )
                continue
            deps[n.name].append(alias[other])
    order: list[str] = []
    state: dict[str, int] = {}  # 1: visiting, 2: placed

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            shown = " -> ".join(topo.nodes[x].shown for x in cycle)
            c.add(
                f"node {topo.nodes[name].shown} stages",
                f"wait-for forms a cycle: {shown}",
                "remove one of these wait-for entries",
                topo.line("topology", "nodes", topo.nodes[name].shown, "stages"),
            )
            state[name] = 2
            return
        state[name] = 1
        for dep in deps[name]:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)
        own = topo.nodes[name].startup_delay
        delay[name] = max([own, *(delay.get(d, 0) for d in deps[name])])

    delay: dict[str, int] = {}
    for name in deps:
        visit(name, [])
    return tuple(sorted(order, key=lambda n: delay[n])), delay


def _iface_order(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return head, int(tail) if tail else -1


def _check_overlaps(
    topo: Topology,
    segments: dict[str, Segment],
    clusters: dict[str, ClusterPlan],
    mgmt: IPv4Network | None,
    c: Collector,
) -> None:
    """Pod, service, underlay and management ranges must not overlap anywhere, except
    service CIDRs of different clusters (each cluster's ClusterIPs are its own)."""
    Range = tuple[str, IPv4Network, int | None, ClusterPlan | None, str]
    ranges: list[Range] = []
    for cl in clusters.values():
        first = topo.nodes[cl.nodes[0]]
        for kind, net in (("pod", cl.pod_cidr), ("service", cl.service_cidr)):
            line = first.label_line(f"podlab.{kind}-cidr")
            ranges.append((f"cluster {cl.name} {kind} CIDR", net, line, cl, kind))
    for seg in segments.values():
        if seg.subnet is not None:
            ranges.append((f"segment {seg.name} subnet", seg.subnet, None, None, "segment"))
    if mgmt is not None:
        ranges.append(("management subnet", mgmt, topo.line("mgmt"), None, "mgmt"))
    for i, (a_name, a, _, a_cl, a_kind) in enumerate(ranges):
        for b_name, b, line, b_cl, b_kind in ranges[i + 1 :]:
            if not a.overlaps(b) or (a_kind == b_kind == "service" and a_cl is not b_cl):
                continue
            hint = (
                pod_overlap_hint(a_cl, b_cl)
                if a_kind == b_kind == "pod"
                else "choose non-overlapping ranges"
            )
            c.add("address plan", f"{a_name} {a} overlaps {b_name} {b}", hint, line)


def underlay_of(plan: LabPlan, node: str) -> IPv4Interface | None:
    """The underlay address of ``node`` (its first underlay interface)."""
    u = plan.nodes[node].underlay
    return u.address if u else None  # None too for an unaddressed plain containerlab link
