"""Flannel's ``vxlan``: an L3 overlay over a VXLAN device with learning off.

Kernel objects (flannel's design note): one device ``flannel.<VNI>`` (VNI 1, UDP
8472, nolearning, local = underlay IP, dev = underlay interface, MAC derived from
the node name so it survives re-creation, address ``<own subnet>.0/32``); and per
peer one onlink route ``<peer subnet> via <peer subnet>.0 dev flannel.1``, one
permanent neighbour ``<peer subnet>.0 lladdr <peer VTEP MAC>`` and one FDB entry
``<peer VTEP MAC> dst <peer underlayIP> self permanent``. The VTEP MAC is published
in the subnet lease as ``backend.VtepMAC``. MTU = underlay − 50 (outer IPv4 20 +
UDP 8 + VXLAN 8 + inner Ethernet 14). Options: VNI, port (class attributes).

The mechanics (device, per-peer route + neighbour + FDB) are parameterised by
``device`` / ``vni`` / ``port`` / ``mac_seed``, so Calico's ``calico-vxlan`` (VNI
4096, UDP 4789, ``vxlan.calico``) and ``cross-subnet`` reuse them by subclassing
and changing only those numbers (ADR 0002 keeps the names apart).
"""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

from harness.agent import netlink as nl
from harness.agent.config import AgentConfig
from harness.agent.datapath.base import (
    BaseDatapath,
    FdbSpec,
    NeighSpec,
    Owned,
    Peer,
    PeerObjects,
    PodInterface,
    RouteSpec,
    Tunnel,
)


class Vxlan(BaseDatapath):
    name: ClassVar[str] = "vxlan"
    pod_interface: ClassVar[PodInterface] = PodInterface.BRIDGED
    overhead: ClassVar[int] = 50
    vni: ClassVar[int] = 1
    port: ClassVar[int] = 8472

    device: ClassVar[str] = "flannel.1"  # flannel.<VNI>
    mac_seed: ClassVar[str] = "vxlan"

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        return Owned(links=frozenset({cls.device}))

    @property
    def mac(self) -> str:
        return nl.stable_mac(f"{self.cfg.cluster}/{self.cfg.node}/{self.mac_seed}")

    def backend_data(self) -> dict[str, Any]:
        return {"VtepMAC": self.mac, "VNI": self.vni, "Port": self.port}

    def devices(self) -> list[str]:
        return [self.device]

    def tunnels(self) -> list[Tunnel]:
        return [Tunnel("udp", self.port)]

    def setup(self, subnet: ipaddress.IPv4Network) -> None:
        under = nl.ifindex(self.ipr, self.cfg.underlay_interface)
        if under is None:
            raise RuntimeError(f"underlay interface {self.cfg.underlay_interface} not found")
        local = str(self.cfg.underlay_address)

        def wrong(msg: Any) -> str | None:
            info = nl.attr(msg, "IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
            if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan" or data is None:
                return "not a vxlan device"
            got = (
                data.get_attr("IFLA_VXLAN_ID"),
                data.get_attr("IFLA_VXLAN_PORT"),
                data.get_attr("IFLA_VXLAN_LOCAL"),
                data.get_attr("IFLA_VXLAN_LINK"),
                data.get_attr("IFLA_VXLAN_LEARNING"),
            )
            exp = (self.vni, self.port, local, under, 0)
            return (
                None if got == exp else f"has (vni, port, local, link, learning)={got}, want {exp}"
            )

        idx = nl.ensure_link(
            self.ipr,
            self.device,
            {
                "kind": "vxlan",
                "vxlan_id": self.vni,
                "vxlan_port": self.port,
                "vxlan_learning": 0,
                "vxlan_local": local,
                "vxlan_link": under,
                "address": self.mac,
                "mtu": self.mtu(),
            },
            wrong,
        )
        if str(nl.attr(self.ipr.get_links(idx)[0], "IFLA_ADDRESS")) != self.mac:
            self.ipr.link("set", index=idx, address=self.mac)
        nl.ensure_addr(self.ipr, idx, ipaddress.IPv4Interface(f"{subnet.network_address}/32"))
        nl.ensure_up(self.ipr, idx, self.mtu())

    def peer_objects(self, peer: Peer) -> PeerObjects:
        mac = str(peer.backend.get("VtepMAC", ""))
        if not mac:
            return PeerObjects()  # a peer not (yet) in vxlan mode: nothing to program
        gw = peer.subnet.network_address
        return PeerObjects(
            routes=[RouteSpec(peer.subnet, gw, self.device, onlink=True)],
            neighs=[NeighSpec(self.device, gw, mac)],
            fdbs=[FdbSpec(self.device, mac, peer.underlay_ip)],
        )
