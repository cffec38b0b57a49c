"""Join-time membership check: the plan's mesh rules, applied to ``clusterinfo`` records.

A cluster of another lab (joined with ``podlab mesh join``) never went through
this lab's ``podlab validate``, so the syncer checks each remote's
``clusterinfo`` against its own and against every remote it already accepted,
before mirroring a single key (so before any agent installs a route). The rules
are those of ``harness.plan.mesh`` (docs/mesh.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any


def routing_of(info: Mapping[str, Any]) -> str:
    return str(info.get("routing") or ("native" if info.get("mode") == "bgp" else "tunnel"))


def refusal(
    own: Mapping[str, Any],
    name: str,
    info: Mapping[str, Any] | None,
    accepted: Mapping[str, Mapping[str, Any]],
) -> str | None:
    """Why remote ``name`` with ``clusterinfo`` ``info`` cannot join, or None if it can.

    ``accepted``: the ``clusterinfo`` of every other remote already mirrored.
    The sentence names the object and the fix (it goes to the status record and
    to ``podlab mesh status``/``podlab mesh join``).
    """
    if info is None:
        return (
            f"cluster {name} exports no clusterinfo (fix: deploy it with podlab.mesh set, "
            "so its podlab-mesh runs)"
        )
    if info.get("name") != name:
        return (
            f"the export etcd listed as {name} belongs to cluster {info.get('name')!r} "
            "(fix: correct the endpoint in the remotes file)"
        )
    if info.get("mesh") != own.get("mesh"):
        return (
            f"cluster {name} is in mesh {info.get('mesh')!r}, this cluster in {own.get('mesh')!r} "
            "(fix: give both the same podlab.mesh)"
        )
    others = {own["name"]: own, **{k: v for k, v in accepted.items() if k != name}}
    try:
        pod = ipaddress.IPv4Network(str(info.get("podCIDR")))
    except ValueError:
        return f"cluster {name} publishes no valid podCIDR ({info.get('podCIDR')!r})"
    for other, oinfo in others.items():
        if other == name:
            return f"cluster name {name} is already used in mesh {own.get('mesh')}"
        if int(oinfo.get("id", 0)) == int(info.get("id", -1)):
            return (
                f"cluster {name} has cluster id {info.get('id')}, already used by cluster "
                f"{other} (fix: give it a unique podlab.cluster-id, 1-255)"
            )
        opod = ipaddress.IPv4Network(str(oinfo.get("podCIDR")))
        if pod.overlaps(opod):
            return (
                f"cluster {name} pod CIDR {pod} overlaps cluster {other} pod CIDR {opod} "
                f"(fix: clusters of mesh {own.get('mesh')} need disjoint pod CIDRs: give "
                f"{name} its own podlab.pod-cidr)"
            )
    if routing_of(info) != routing_of(own):
        return (
            f"cluster {name} (mode {info.get('mode')}) uses {routing_of(info)} routing, "
            f"this cluster (mode {own.get('mode')}) {routing_of(own)} (fix: bgp in every "
            "cluster of a mesh, or in none)"
        )
    if info.get("encryption") != own.get("encryption"):
        return (
            f"cluster {name} uses encryption {info.get('encryption')}, this cluster "
            f"{own.get('encryption')} (fix: one podlab.encryption for the whole mesh)"
        )
    if info.get("caFingerprint") != own.get("caFingerprint"):
        return (
            f"cluster {name} was deployed with another mesh CA ({info.get('caFingerprint')}) "
            "(fix: deploy both with the same CA, --mesh-ca)"
        )
    return None
