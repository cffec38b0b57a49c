"""Calico-style routed pod interfaces: a ``cali*`` veth per pod, a /32 route, proxy-ARP.

The Calico family (``bgp``, ``ipip``, ``calico-vxlan``, ``cross-subnet``) attaches
pods without a bridge. Kernel objects per pod:

- node side: veth ``cali<11 hex>`` (no address, up, ``proxy_arp=1``,
  ``neigh/proxy_delay=0``) and the host route ``<pod ip>/32 dev cali… scope link``
  stamped ``RTPROT_PODLAB_POD`` (78), so the datapath reconciler, which owns
  proto 77 and removes any proto-77 route no mode asked for, leaves it alone;
- pod side: ``eth0`` with the pod IP as a /32, a link route to the fake gateway
  ``169.254.1.1``, a permanent neighbour ``169.254.1.1 → <cali MAC>`` and the
  default route via ``169.254.1.1``. Calico relies on proxy-ARP alone, which
  answers only while the node has a route towards 169.254.1.1 through another
  device (normally its default route); lab nodes may have none, so the pod
  also gets the permanent neighbour and never depends on it.

Traffic between two pods of one node is routed through the node like any other.
This module is the building block; ``pods.py`` chooses it for
``PodInterface.ROUTED`` (see docs/calico-modes.md for the wiring).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging

from pyroute2 import IPRoute

from harness.agent import netlink as nl
from harness.agent.config import AgentConfig
from harness.agent.datapath.base import NOTHING, Owned

log = logging.getLogger("podlab.routed")

GATEWAY = ipaddress.IPv4Address("169.254.1.1")
RTPROT_PODLAB_POD = 78
SCOPE_LINK = 253


def host_if_name(namespace: str, name: str) -> str:
    """Node-side veth name of a pod: ``cali`` + 11 hex digits (15 characters)."""
    return "cali" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:11]


class RoutedInterface:
    """The node side of routed pods, in the namespace ``ipr`` is bound to."""

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr

    def prepare(self, gateway: ipaddress.IPv4Interface, mtu: int) -> None:
        """Nothing node-wide to build: no bridge, no gateway address (Calico needs none)."""
        return None

    def attach(self, host_if: str, pod_ip: ipaddress.IPv4Address) -> None:
        """Up, proxy-ARP on, and the /32 host route to the pod (idempotent)."""
        idx = nl.ifindex(self.ipr, host_if)
        if idx is None:
            raise RuntimeError(f"pod veth {host_if} does not exist")
        nl.ensure_up(self.ipr, idx)
        nl.set_sysctl(f"net/ipv4/conf/{host_if}/proxy_arp", "1")
        nl.set_sysctl(f"net/ipv4/neigh/{host_if}/proxy_delay", "0")
        self.ipr.route(
            "replace",
            dst=str(pod_ip),
            dst_len=32,
            oif=idx,
            scope=SCOPE_LINK,
            proto=RTPROT_PODLAB_POD,
        )

    def detach(self, pod_ip: ipaddress.IPv4Address) -> None:
        """Remove the pod's host route (the veth goes with the pod's namespace)."""
        nl.ignore_missing(
            lambda: self.ipr.route(
                "del", dst=str(pod_ip), dst_len=32, scope=SCOPE_LINK, proto=RTPROT_PODLAB_POD
            )
        )


def plumb_pod(pod: IPRoute, pod_ip: ipaddress.IPv4Address, host_mac: str, mtu: int) -> None:
    """Pod side: ``eth0`` up with ``pod_ip/32`` and a default route via 169.254.1.1.

    ``pod`` is an IPRoute bound to the pod's namespace; ``host_mac`` is the MAC of
    the node-side ``cali*`` veth (the permanent neighbour for the fake gateway).
    """
    lo = pod.link_lookup(ifname="lo")[0]
    pod.link("set", index=lo, state="up")
    eth0 = pod.link_lookup(ifname="eth0")[0]
    nl.ensure_addr(pod, eth0, ipaddress.IPv4Interface(f"{pod_ip}/32"))
    pod.link("set", index=eth0, state="up", mtu=mtu)
    pod.route("replace", dst=str(GATEWAY), dst_len=32, oif=eth0, scope=SCOPE_LINK)
    pod.neigh("replace", dst=str(GATEWAY), lladdr=host_mac, ifindex=eth0, state=nl.NUD_PERMANENT)
    pod.route("replace", dst="0.0.0.0", dst_len=0, gateway=str(GATEWAY), oif=eth0)


class RoutedPodNetwork:
    """``podnet.PodNetwork`` adapter: the ROUTED pod interface style for ``pods.py``.

    Node-wide there is nothing to prepare (no bridge; the ``gateway`` the pod
    manager passes is ignored: pods use 169.254.1.1). Orphans are found as the
    ``cali*`` links of the node.
    """

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr
        self.node_side = RoutedInterface(ipr)

    def host_if_name(self, namespace: str, name: str) -> str:
        return host_if_name(namespace, name)

    def prepare(self, gateway: ipaddress.IPv4Interface, mtu: int) -> None:
        self.node_side.prepare(gateway, mtu)

    def plumb_pod(
        self,
        pod: IPRoute,
        eth0: int,
        ip: str,
        gateway: ipaddress.IPv4Interface,
        mtu: int,
        host_mac: str,
    ) -> None:
        plumb_pod(pod, ipaddress.IPv4Address(ip), host_mac, mtu)

    def attach(self, host_if: str, ip: str) -> None:
        self.node_side.attach(host_if, ipaddress.IPv4Address(ip))

    def detach(self, host_if: str, ip: str) -> None:
        self.node_side.detach(ipaddress.IPv4Address(ip))

    def announce(self, netns_path: str, ip: str) -> None:
        # Nothing outlives a routed pod: the node reaches it through its own cali*
        # veth (neighbour entries die with the old one) and other pods through the
        # node (their 169.254.1.1 neighbour is permanent).
        return None

    def ports(self) -> list[str]:
        names = (str(nl.attr(m, "IFLA_IFNAME", "")) for m in self.ipr.get_links())
        return [n for n in names if n.startswith("cali")]

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        return NOTHING  # nothing node-wide; each cali* veth is re-plumbed with its pod
