"""Calico's ``cross-subnet``: direct routes within an L2 segment, VXLAN only across segments.

Each lease carries the node's ``segment``. For a peer on this node's segment the
only kernel object is a host-gw style route ``<peer subnet> via <peer underlayIP>
dev <underlay iface> proto 77`` (packets leave unencapsulated); for a peer on
another segment, the ``calico-vxlan`` objects (onlink route via ``vxlan.calico``,
permanent neighbour, FDB entry to the peer's underlay IP; VNI 4096, UDP 4789).
The kernel here has no ipip module, so VXLAN is the cross-segment encapsulation
(Calico's ``vxlanMode: CrossSubnet``). Pods are ROUTED. MTU = underlay − 50: one
pod MTU for all destinations, so it must fit the encapsulated path.
Options: none.

The VXLAN outer packets are exempted from conntrack (``tunnels()``, the node's
notrack chains) only while some accepted peer is on another segment: on a node
whose peers all share its segment no packet is tunnelled, and the underlay's
``raw-ingress`` chain would only add a pass of every pod packet arriving
unencapsulated on the underlay interface (docs/throughput.md "What costs", item
8). The agent re-applies its node ruleset when this changes
(``Agent._sync_tunnels``).
"""

from __future__ import annotations

from typing import ClassVar

from harness.agent.datapath.base import Peer, PeerObjects, RouteSpec, Tunnel
from harness.agent.datapath.calicovxlan import CalicoVxlan


class CrossSubnet(CalicoVxlan):
    name: ClassVar[str] = "cross-subnet"
    _remote_peer: bool = False  # an accepted peer on another segment (set per sync)

    def peers_changed(self, peers: list[Peer]) -> None:
        super().peers_changed(peers)
        self._remote_peer = any(p.segment != self.cfg.segment for p in peers)

    def tunnels(self) -> list[Tunnel]:
        return super().tunnels() if self._remote_peer else []

    def peer_objects(self, peer: Peer) -> PeerObjects:
        if peer.segment == self.cfg.segment:
            route = RouteSpec(peer.subnet, peer.underlay_ip, self.cfg.underlay_interface)
            return PeerObjects(routes=[route])
        return super().peer_objects(peer)
