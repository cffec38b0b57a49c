"""Hand-built LabPlans for the backend's own tests and benchmarks.

These bypass the topology loader on purpose: the backend is tested against
the LabPlan contract alone, so a loader change cannot hide a backend bug.
"""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Interface, IPv4Network

from harness.plan.model import ClusterPlan, Interface, LabPlan, NodePlan, Route, Segment


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _cluster(name: str, cid: int, nodes: list[str]) -> ClusterPlan:
    return ClusterPlan(
        name=name,
        id=cid,
        pod_cidr=IPv4Network(f"10.{243 + cid}.0.0/16"),
        service_cidr=IPv4Network(f"10.{95 + cid}.0.0/16"),
        mode="vxlan",
        encryption="none",
        proxy_mode="nftables",
        nodes=tuple(nodes),
        control_plane=nodes[0],
    )


def star_plan(lab: str, mgmt: str, count: int = 3, underlay: str = "192.168.100.0/24") -> LabPlan:
    """``count`` nodes of one cluster on one bridge segment ``fabric``."""
    mnet, unet = IPv4Network(mgmt), IPv4Network(underlay)
    names = ["c1-cp"] + [f"c1-w{i}" for i in range(1, count)]
    nodes = {}
    for i, name in enumerate(names):
        iface = Interface("eth1", "fabric", IPv4Interface(f"{unet[i + 1]}/{unet.prefixlen}"), 1500)
        nodes[name] = NodePlan(
            name=name,
            role="control-plane" if i == 0 else "worker",
            cluster="c1",
            mgmt=IPv4Interface(f"{mnet[i + 2]}/{mnet.prefixlen}"),
            interfaces=(iface,),
        )
    seg = Segment("fabric", "bridge", unet, 1500, tuple((n, "eth1") for n in names))
    return LabPlan(
        name=lab,
        source=f"<synthetic star {count}>",
        digest=_digest("star", lab, mgmt, count, underlay),
        mgmt_subnet=mnet,
        mgmt_gateway=IPv4Interface(f"{mnet[1]}/{mnet.prefixlen}"),
        nodes=nodes,
        segments={"fabric": seg},
        clusters={"c1": _cluster("c1", 1, names)},
        bridges=("fabric",),
    )


def routed_plan(lab: str, mgmt: str) -> LabPlan:
    """Two clusters on two bridge segments joined by ``router``, plus a p2p link.

    c1-cp, c1-w1 on ``lan1`` (192.168.11.0/24); c2-cp, c2-w1 on ``lan2``
    (192.168.12.0/24); c1-cp and c2-cp also share a p2p link (10.255.0.0/30).
    """
    mnet = IPv4Network(mgmt)
    lan = {1: IPv4Network("192.168.11.0/24"), 2: IPv4Network("192.168.12.0/24")}
    nodes: dict[str, NodePlan] = {}
    members: dict[int, list[tuple[str, str]]] = {1: [], 2: []}
    idx = 2
    for c in (1, 2):
        for j, name in enumerate((f"c{c}-cp", f"c{c}-w1")):
            other = 3 - c
            ifaces = [Interface("eth1", f"lan{c}", IPv4Interface(f"{lan[c][10 + j]}/24"), 1500)]
            if j == 0:
                p2p = IPv4Interface(f"10.255.0.{c}/30")
                ifaces.append(Interface("eth2", "p2p", p2p, 1400))
            nodes[name] = NodePlan(
                name=name,
                role="control-plane" if j == 0 else "worker",
                cluster=f"c{c}",
                mgmt=IPv4Interface(f"{mnet[idx]}/{mnet.prefixlen}"),
                interfaces=tuple(ifaces),
                routes=(Route(lan[other], lan[c][1], "eth1"),),
            )
            members[c].append((name, "eth1"))
            idx += 1
    nodes["router"] = NodePlan(
        name="router",
        role="router",
        cluster=None,
        mgmt=IPv4Interface(f"{mnet[idx]}/{mnet.prefixlen}"),
        interfaces=(
            Interface("eth1", "lan1", IPv4Interface(f"{lan[1][1]}/24"), 1500),
            Interface("eth2", "lan2", IPv4Interface(f"{lan[2][1]}/24"), 1500),
        ),
    )
    members[1].append(("router", "eth1"))
    members[2].append(("router", "eth2"))
    segments = {
        f"lan{c}": Segment(f"lan{c}", "bridge", lan[c], 1500, tuple(members[c])) for c in (1, 2)
    }
    segments["p2p"] = Segment(
        "p2p", "p2p", IPv4Network("10.255.0.0/30"), 1400, (("c1-cp", "eth2"), ("c2-cp", "eth2"))
    )
    return LabPlan(
        name=lab,
        source="<synthetic routed>",
        digest=_digest("routed", lab, mgmt),
        mgmt_subnet=mnet,
        mgmt_gateway=IPv4Interface(f"{mnet[1]}/{mnet.prefixlen}"),
        nodes=nodes,
        segments=segments,
        clusters={
            "c1": _cluster("c1", 1, ["c1-cp", "c1-w1"]),
            "c2": _cluster("c2", 2, ["c2-cp", "c2-w1"]),
        },
        bridges=("lan1", "lan2"),
    )
