"""Cluster-mesh membership rules, checked before anything is built or routed.

Clusters join a mesh with the label ``podlab.mesh: NAME``. Within one mesh (as
in Cilium's ClusterMesh): cluster names and ids unique, pod CIDRs disjoint,
one routing for all (``native`` = every cluster in ``bgp`` mode, routed through
the lab's routers; ``tunnel`` = every other mode, VXLAN to the remote node),
one encryption for all. Service CIDRs may overlap (every kubeadm cluster uses
10.96.0.0/12). The mesh syncer applies the same rules again when a cluster
joins from outside this file (``harness/mesh/membership.py``); both read
``MESH_RULES`` so the two places cannot drift apart. See docs/mesh.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from harness.errors import Collector
from harness.plan.model import ClusterPlan

MESH_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
#: Cluster names of mesh members become etcd user names (``remote-<name>``) and
#: certificate CNs: DNS labels only.
CLUSTER_NAME_RE = MESH_NAME_RE

MESH_RULES = (
    "cluster names and ids (1-255) unique; pod CIDRs disjoint; every cluster the same "
    "routing (all bgp = native, or none bgp = tunnel) and the same encryption"
)


def check_meshes(
    clusters: Mapping[str, ClusterPlan],
    lines: Mapping[str, Mapping[str, int | None]],
    c: Collector,
) -> None:
    """Collect one located problem per broken mesh rule (ids are checked lab-wide
    by the cluster builder, pod CIDR overlaps by the address plan)."""
    meshes: dict[str, list[ClusterPlan]] = {}
    for cl in clusters.values():
        if cl.mesh is None:
            continue
        where = lines.get(cl.name, {})
        if not MESH_NAME_RE.match(cl.mesh):
            c.add(
                f"cluster {cl.name} label podlab.mesh",
                f"mesh name {cl.mesh!r} is invalid",
                "use 1-32 lowercase letters, digits and dashes",
                where.get("podlab.mesh"),
            )
            continue
        if not CLUSTER_NAME_RE.match(cl.name):
            c.add(
                f"cluster {cl.name} label podlab.cluster",
                f"cluster name {cl.name!r} cannot join a mesh (it becomes a certificate name)",
                "use 1-32 lowercase letters, digits and dashes",
                where.get("podlab.mesh"),
            )
        meshes.setdefault(cl.mesh, []).append(cl)
    for name, members in meshes.items():
        first = members[0]
        for cl in members[1:]:
            where = lines.get(cl.name, {})
            if cl.mesh_routing != first.mesh_routing:
                c.add(
                    f"cluster {cl.name} label podlab.mode",
                    f"mode {cl.mode} means {cl.mesh_routing} routing in mesh {name} but "
                    f"cluster {first.name} (mode {first.mode}) uses {first.mesh_routing} routing",
                    "in one mesh use bgp in every cluster (native routing) or in none (tunnel)",
                    where.get("podlab.mode"),
                )
            if cl.encryption != first.encryption:
                c.add(
                    f"cluster {cl.name} label podlab.encryption",
                    f"encryption {cl.encryption} differs from {first.encryption} in cluster "
                    f"{first.name} of the same mesh {name}",
                    "use one podlab.encryption for every cluster of a mesh",
                    where.get("podlab.encryption"),
                )


def pod_overlap_hint(a: ClusterPlan | None, b: ClusterPlan | None) -> str:
    """The fix for two overlapping pod CIDRs, naming the mesh when they share one."""
    if a is not None and b is not None and a.mesh and a.mesh == b.mesh:
        return f"clusters of mesh {a.mesh} need disjoint pod CIDRs: give each its own " + (
            "podlab.pod-cidr"
        )
    return "ClusterMesh needs unique pod CIDRs: give each cluster its own podlab.pod-cidr"
