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
"""

from __future__ import annotations

from typing import ClassVar

from harness.agent.datapath.base import Peer, PeerObjects, RouteSpec
from harness.agent.datapath.calicovxlan import CalicoVxlan


class CrossSubnet(CalicoVxlan):
    name: ClassVar[str] = "cross-subnet"

    def peer_objects(self, peer: Peer) -> PeerObjects:
        if peer.segment == self.cfg.segment:
            route = RouteSpec(peer.subnet, peer.underlay_ip, self.cfg.underlay_interface)
            return PeerObjects(routes=[route])
        return super().peer_objects(peer)
