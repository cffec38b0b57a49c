"""How a pod's veth meets its node: one class per pod interface style.

The style is a property of the datapath's family (``Datapath.pod_interface``),
not a flag: Flannel modes bridge pods into ``cni0`` (gateway = the subnet's
``.1`` on the bridge, pods on one node talk over the bridge); Calico modes (issue
5) will route each pod on its own ``cali*`` veth (a /32 route per pod, proxy-ARP
answering for ``169.254.1.1``; building block: ``routed.py``). To add a style:
a class satisfying ``PodNetwork`` and one entry in ``POD_INTERFACES``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import struct
from functools import partial
from typing import Any, Protocol

from pyroute2 import IPRoute, netns

from harness.agent import netlink as nl
from harness.agent.config import AgentConfig
from harness.agent.datapath.base import Owned, PodInterface
from harness.agent.routed import RoutedPodNetwork

BRIDGE = "cni0"


class PodNetwork(Protocol):
    """The node side and the pod side of one pod interface style."""

    def host_if_name(self, namespace: str, name: str) -> str:
        """Deterministic node-side veth name (≤ 15 characters) for a pod."""
        ...

    def prepare(self, gateway: ipaddress.IPv4Interface, mtu: int) -> None:
        """Node-wide objects every pod needs (e.g. the bridge); idempotent."""
        ...

    def plumb_pod(
        self,
        pod: IPRoute,
        eth0: int,
        ip: str,
        gateway: ipaddress.IPv4Interface,
        mtu: int,
        host_mac: str,
    ) -> None:
        """Inside the pod namespace: address, routes and MTU on ``eth0`` (``host_mac``
        is the node-side veth's MAC, for styles that pin their gateway's neighbour)."""
        ...

    def attach(self, host_if: str, ip: str) -> None:
        """Node side of one pod's veth: idempotent, re-run on every full pass."""
        ...

    def detach(self, host_if: str, ip: str) -> None:
        """Undo node-side state that does not vanish with the veth (before it is deleted)."""
        ...

    def announce(self, netns_path: str, ip: str) -> None:
        """After a pod is (re-)plumbed and attached: make neighbours forget a MAC its
        address had before (a deleted pod's), where the style keeps such entries."""
        ...

    def ports(self) -> list[str]:
        """Node-side pod interfaces that exist now (to find orphans)."""
        ...

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        """This style's node-wide objects (not the per-pod veths)."""
        ...


class BridgedInterface:
    """Flannel family: the node end of the veth is a port of bridge ``cni0``."""

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr

    def host_if_name(self, namespace: str, name: str) -> str:
        return "veth" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]

    def prepare(self, gateway: ipaddress.IPv4Interface, mtu: int) -> None:
        # A bridge without a MAC of its own takes its ports' lowest one and changes it
        # as pods come and go; the pods' cached gateway MAC then leads nowhere once the
        # pod whose veth lent it is gone. A fixed MAC (per gateway address) never moves.
        mac = nl.stable_mac(f"{BRIDGE}/{gateway}")
        idx = nl.ensure_link(self.ipr, BRIDGE, {"kind": "bridge", "address": mac}, _not_bridge)
        if str(nl.attr(self.ipr.get_links(idx)[0], "IFLA_ADDRESS")) != mac:
            self.ipr.link("set", index=idx, address=mac)
        nl.ensure_addr(self.ipr, idx, gateway)
        nl.ensure_up(self.ipr, idx, mtu)

    def plumb_pod(
        self,
        pod: IPRoute,
        eth0: int,
        ip: str,
        gateway: ipaddress.IPv4Interface,
        mtu: int,
        host_mac: str,
    ) -> None:
        pod.addr("add", index=eth0, address=ip, prefixlen=gateway.network.prefixlen)
        pod.link("set", index=eth0, state="up", mtu=mtu)
        pod.route("replace", dst="0.0.0.0", dst_len=0, gateway=str(gateway.ip))

    def attach(self, host_if: str, ip: str) -> None:
        bridge, idx = nl.ifindex(self.ipr, BRIDGE), nl.ifindex(self.ipr, host_if)
        if idx is None:
            raise RuntimeError(f"veth {host_if} missing")
        msg = self.ipr.get_links(idx)[0]
        if nl.attr(msg, "IFLA_MASTER") != bridge:
            self.ipr.link("set", index=idx, master=bridge)
            # the CNI bridge plugin's hairpinMode: a pod reaching its own Service
            # through DNAT leaves and re-enters the same bridge port
            self.ipr.brport("set", index=idx, mode=1)
        nl.ensure_up(self.ipr, idx)

    def detach(self, host_if: str, ip: str) -> None:
        return None  # a bridge port leaves the bridge with its veth

    def announce(self, netns_path: str, ip: str) -> None:
        """A new pod often gets the address of a pod just deleted (the lowest free one),
        and neighbour entries on ``cni0`` outlive that pod's veth: the node's entry
        for the address still names the old MAC, REACHABLE for up to ~45 s, then a
        few seconds of failing unicast probes (measured: 22 s before the node reached
        a new pod). Everything routed to the pod through the node, readiness probes
        included, is lost meanwhile. So the node's entry is deleted, and the pod sends
        one gratuitous ARP, which also corrects the other pods on the bridge (the CNI
        bridge plugin announces new addresses the same way)."""
        bridge = nl.ifindex(self.ipr, BRIDGE)
        if bridge is not None:
            nl.ignore_missing(partial(self.ipr.neigh, "del", dst=ip, ifindex=bridge))
        gratuitous_arp(netns_path, "eth0", ip)

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        # with it go its gateway address and connected route, which a routed mode
        # must not keep (they would answer for the pod subnet on the node)
        return Owned(links=frozenset({BRIDGE}))

    def ports(self) -> list[str]:
        bridge = nl.ifindex(self.ipr, BRIDGE)
        if bridge is None:
            return []
        return [
            str(nl.attr(m, "IFLA_IFNAME"))
            for m in self.ipr.get_links()
            if nl.attr(m, "IFLA_MASTER") == bridge
            and str(nl.attr(m, "IFLA_IFNAME", "")).startswith("veth")
        ]


ETH_P_ARP = 0x0806


def garp_frame(mac: str, ip: str) -> bytes:
    """A broadcast gratuitous ARP request: who-has ``ip`` tell ``ip`` at ``mac`` (pure)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = ipaddress.IPv4Address(ip).packed
    eth = b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + addr + b"\x00" * 6 + addr
    return eth + arp


def gratuitous_arp(netns_path: str, ifname: str, ip: str) -> None:
    """Send one gratuitous ARP from ``ifname`` inside the pod's network namespace."""
    with IPRoute(netns=netns_path) as pod:
        mac = str(nl.attr(pod.get_links(pod.link_lookup(ifname=ifname)[0])[0], "IFLA_ADDRESS"))
    sock = netns.create_socket(
        netns_path, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP), flags=0
    )
    with sock:
        sock.bind((ifname, ETH_P_ARP))
        sock.send(garp_frame(mac, ip))


def _not_bridge(msg: Any) -> str | None:
    info = nl.attr(msg, "IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return None if kind == "bridge" else f"is a {kind or 'plain'} link, not a bridge"


#: Pod interface styles this agent implements (ROUTED: Calico modes, routed.py).
POD_INTERFACES: dict[PodInterface, type[PodNetwork]] = {
    PodInterface.BRIDGED: BridgedInterface,
    PodInterface.ROUTED: RoutedPodNetwork,
}
