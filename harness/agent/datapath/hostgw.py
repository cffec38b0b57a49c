"""Flannel's ``host-gw``: plain routes to each peer's pod subnet via its underlay IP.

Kernel objects: per peer, ``<peer subnet> via <peer underlayIP> dev <underlay
iface> proto 77``. No encapsulation, so the pod MTU is the underlay MTU.
Requirement: every peer must share this node's L2 segment (the next hop must be
directly reachable). Peers on another segment are refused — no route is installed
for them and the problem, naming them, goes to the log and the node record.
Options: none.
"""

from __future__ import annotations

from typing import ClassVar

from harness.agent.datapath.base import BaseDatapath, Peer, PeerObjects, PodInterface, RouteSpec


class HostGw(BaseDatapath):
    name: ClassVar[str] = "host-gw"
    pod_interface: ClassVar[PodInterface] = PodInterface.BRIDGED
    overhead: ClassVar[int] = 0

    def refuse(self, peers: list[Peer]) -> tuple[list[Peer], list[str]]:
        ok = [p for p in peers if p.segment == self.cfg.segment]
        away = [p for p in peers if p.segment != self.cfg.segment]
        if not away:
            return ok, []
        named = ", ".join(f"{p.node} ({p.underlay_ip}, segment {p.segment})" for p in away)
        return ok, [
            f"host-gw needs every node on one L2 segment; {self.cfg.node} is on segment "
            f"{self.cfg.segment} but these peers are not: {named}. No routes were installed "
            "for them; use mode vxlan (or cross-subnet) for this topology"
        ]

    def peer_objects(self, peer: Peer) -> PeerObjects:
        route = RouteSpec(peer.subnet, peer.underlay_ip, self.cfg.underlay_interface)
        return PeerObjects(routes=[route])
