"""The BGP fabric of native meshes: AS numbers and who peers with whom (docs/mesh.md).

In a mesh whose clusters all run ``bgp`` (native routing), pod routes cross the
lab's routers unencapsulated, as Calico's nodes peer with a top-of-rack switch
(ADR 0015): every node of a meshed cluster peers over eBGP with the routers on
its underlay segment, each router re-advertises what it learnt to the other
clusters' nodes and to the routers it shares a segment with.

Numbers (all private 2-byte ASNs):

- a cluster's AS is ``64512`` (Calico's default) when it is in no mesh, and
  ``64512 + cluster id`` (64513–64767) when it is: ids are unique within a mesh,
  so clusters have distinct ASes and BGP's AS-path check keeps a cluster's own
  routes from coming back to it;
- the routers are numbered ``65000 + i`` in name order: each router its own AS
  (eBGP between routers too, RFC 7938's data-centre design), so a chain of
  routers passes routes on without iBGP's split horizon.

Pure functions over the plan; the inventory exports their results
(``podlab_bgp_*``) to the agent (agent.yaml ``bgp_as``, ``bgp_routers``) and to
the ``router`` role.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from harness.errors import Collector
from harness.plan.model import ClusterPlan, LabPlan, NodePlan

CLUSTER_ASN = 64512
ROUTER_ASN_BASE = 65000
#: Routers tag each pod route with ``(COMMUNITY_AS, mesh_tag(mesh))`` when a node
#: announces it, and send a node only the routes tagged with its own mesh: meshes
#: sharing a router stay apart, and labs joined later agree on the tags by name.
COMMUNITY_AS = 64999


def mesh_tag(mesh: str) -> int:
    """A mesh's community value (1–65535), the same in every lab for the same name."""
    return int(hashlib.sha256(mesh.encode()).hexdigest()[:8], 16) % 65535 + 1


def cluster_asn(cluster: ClusterPlan) -> int:
    """The AS of a cluster's nodes (their iBGP mesh, and their side of router sessions)."""
    return CLUSTER_ASN + cluster.id if cluster.mesh else CLUSTER_ASN


def router_asns(plan: LabPlan) -> dict[str, int]:
    """Each router's AS: ``65000 + i`` in name order."""
    routers = sorted(n.name for n in plan.nodes.values() if n.is_router)
    return {name: ROUTER_ASN_BASE + i for i, name in enumerate(routers)}


def _underlay_ip(node: NodePlan) -> str:
    # a cluster node always has an addressed underlay (only plain hosts may have none)
    assert node.underlay is not None and node.underlay.address is not None, node.name
    return str(node.underlay.address.ip)


def _address_on(node: NodePlan, segment: str) -> str | None:
    return next(
        (str(i.address.ip) for i in node.interfaces if i.segment == segment and i.address),
        None,
    )


def node_routers(plan: LabPlan, node: str) -> list[dict[str, Any]]:
    """The routers a node of a meshed cluster peers with: those on its underlay segment."""
    n = plan.nodes[node]
    cl = plan.clusters.get(n.cluster or "")
    if cl is None or not cl.mesh or n.underlay is None:
        return []
    asns = router_asns(plan)
    out = []
    for name in sorted(asns):
        address = _address_on(plan.nodes[name], n.underlay.segment)
        if address is not None:
            out.append({"name": name, "address": address, "as": asns[name]})
    return out


def router_bgp(plan: LabPlan, router: str) -> dict[str, Any]:
    """A router's BGP settings: its AS and router id, the meshed nodes on its segments
    (with what each may announce and its mesh's tag) and the routers it shares a
    segment with.

    Every meshed cluster's nodes are listed whatever their mode: the ``router`` role
    keeps only the nodes whose cluster runs ``bgp`` after the deploy's mode override,
    and runs BIRD at all only when one of ``clusters`` (meshed cluster → a node of
    it whose mode to read) does. ``pod_cidrs``: every meshed pod CIDR of the lab
    (what routers may pass between them).
    """
    r = plan.nodes[router]
    asns = router_asns(plan)
    mine = {i.segment: str(i.address.ip) for i in r.interfaces if i.address}
    nodes = []
    for n in sorted(plan.nodes.values(), key=lambda n: n.name):
        cl = plan.clusters.get(n.cluster or "")
        if cl is None or not cl.mesh or n.underlay is None or n.underlay.segment not in mine:
            continue
        nodes.append(
            {
                "name": n.name,
                "cluster": cl.name,
                "mesh": cl.mesh,
                "address": _underlay_ip(n),
                "as": cluster_asn(cl),
                "pod_cidr": str(cl.pod_cidr),
                "node_prefix": cl.node_prefix,
                "mesh_tag": mesh_tag(cl.mesh),
            }
        )
    routers = []
    for name in sorted(asns):
        if name == router:
            continue
        shared = sorted(set(mine) & {i.segment for i in plan.nodes[name].interfaces})
        if shared:
            routers.append(
                {
                    "name": name,
                    "address": _address_on(plan.nodes[name], shared[0]),
                    "as": asns[name],
                }
            )
    addressed = [i.address for i in r.interfaces if i.address]
    first = addressed[0].ip if addressed else r.mgmt.ip
    return {
        "as": asns.get(router, ROUTER_ASN_BASE),
        "router_id": str(first),
        "community_as": COMMUNITY_AS,
        "nodes": nodes,
        "routers": routers,
        "pod_cidrs": sorted(str(c.pod_cidr) for c in plan.clusters.values() if c.mesh),
        "clusters": {
            c.name: c.control_plane
            for c in sorted(plan.clusters.values(), key=lambda c: c.name)
            if c.mesh
        },
    }


def check_native_routers(
    plan: LabPlan, c: Collector, lines: Mapping[str, int | None] | None = None
) -> None:
    """Every node of a native-mesh cluster needs a router on its underlay segment: that
    router is where its pod routes enter and leave the fabric."""
    for cl in plan.clusters.values():
        if not cl.mesh or cl.mesh_routing != "native":
            continue
        for name in cl.nodes:
            n = plan.nodes[name]
            if n.underlay is not None and not node_routers(plan, name):
                c.add(
                    f"node {name} of cluster {cl.name}",
                    f"mesh {cl.mesh} routes natively (mode bgp) but no router is on its "
                    f"segment {n.underlay.segment} to carry its pod routes",
                    f"connect a node with podlab.role: router to {n.underlay.segment}, or use "
                    "a tunnel mode (any mode but bgp) in every cluster of the mesh",
                    (lines or {}).get(name),
                )
