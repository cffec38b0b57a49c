"""Calico-family pod interfaces (mode ``routed``): a ``cali*`` veth, a /32, proxy-ARP.

Kernel objects per pod (as Calico's plugin makes them, dataplane_linux.go):

- node side: veth ``cali<11 hex>`` (no address, up, ``proxy_arp=1``,
  ``neigh/proxy_delay=0``) and the host route ``<pod ip>/32 dev cali… scope
  link`` stamped ``RTPROT_PODLAB_POD`` (78), so the datapath reconciler, which
  owns proto 77 and removes any proto-77 route no mode asked for, leaves it be;
- pod side: ``eth0`` with the pod IP as a /32, a link route to the fake gateway
  ``169.254.1.1``, a permanent neighbour ``169.254.1.1 → <cali MAC>`` and the
  default route via ``169.254.1.1``. Calico relies on proxy-ARP alone, which
  answers only while the node has a route towards 169.254.1.1 through another
  device (normally its default route); lab nodes may have none, so the pod also
  gets the permanent neighbour and never depends on it.

Traffic between two pods of one node is routed through the node like any other.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pyroute2 import IPRoute

from harness.agent import netlink as nl
from harness.cni import links

GATEWAY = ipaddress.IPv4Address("169.254.1.1")
RTPROT_PODLAB_POD = 78
SCOPE_LINK = 253


def host_if_name(seed: str) -> str:
    """``cali`` + 11 hex digits (15 characters)."""
    return links.host_if_name("cali", 11, seed)


def add(
    host: IPRoute,
    pod: IPRoute,
    netns: str,
    ifname: str,
    host_if: str,
    tag: str,
    seed: str,
    address: str,
    mtu: int,
) -> dict[str, Any]:
    """Plumb one pod; returns the result (1.1.0 shape, before version conversion)."""
    veth = links.make_veth(host, pod, netns, ifname, host_if, mtu, tag, seed)
    nl.set_sysctl(f"net/ipv4/conf/{host_if}/proxy_arp", "1")
    nl.set_sysctl(f"net/ipv4/neigh/{host_if}/proxy_delay", "0")
    host.route(
        "replace",
        dst=address,
        dst_len=32,
        oif=veth.host_index,
        scope=SCOPE_LINK,
        proto=RTPROT_PODLAB_POD,
    )
    eth0 = veth.pod_index
    pod.addr("add", index=eth0, address=address, prefixlen=32)
    pod.link("set", index=eth0, state="up")
    pod.route("replace", dst=str(GATEWAY), dst_len=32, oif=eth0, scope=SCOPE_LINK)
    pod.neigh(
        "replace", dst=str(GATEWAY), lladdr=veth.host_mac, ifindex=eth0, state=nl.NUD_PERMANENT
    )
    pod.route("replace", dst="0.0.0.0", dst_len=0, gateway=str(GATEWAY), oif=eth0)
    return {
        "interfaces": [
            {"name": host_if, "mac": veth.host_mac, "mtu": mtu},
            {"name": ifname, "mac": veth.pod_mac, "mtu": mtu, "sandbox": netns},
        ],
        "ips": [{"address": f"{address}/32", "gateway": str(GATEWAY), "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": str(GATEWAY)}],
        "dns": {},
    }


def _host_route(host: IPRoute, address: str, index: int) -> bool:
    for r in host.get_routes(family=nl.AF_INET, dst=address, dst_len=32, table=nl.MAIN_TABLE):
        if r["dst_len"] == 32 and nl.attr(r, "RTA_OIF") == index:
            return True
    return False


def check(
    host: IPRoute, pod: IPRoute, ifname: str, host_if: str, address: str, mtu: int
) -> list[str]:
    """What differs from a fresh ADD (empty: all as plumbed)."""
    problems = []
    veth = links.link_state(host, host_if)
    eth = links.link_state(pod, ifname)
    if veth is None:
        problems.append(f"node-side veth {host_if} is missing")
    else:
        if not _host_route(host, address, veth["index"]):
            problems.append(f"node route {address}/32 dev {host_if} is missing")
        try:
            with open(f"/proc/sys/net/ipv4/conf/{host_if}/proxy_arp") as f:
                if f.read().strip() != "1":
                    problems.append(f"proxy_arp is off on {host_if}")
        except OSError:
            problems.append(f"cannot read proxy_arp of {host_if}")
    if eth is None:
        return [*problems, f"{ifname} is missing in the pod"]
    if not eth["up"]:
        problems.append(f"{ifname} is down")
    if eth["mtu"] != mtu:
        problems.append(f"{ifname} has MTU {eth['mtu']}, expected {mtu}")
    if f"{address}/32" not in links.addresses(pod, eth["index"]):
        problems.append(f"{ifname} lacks address {address}/32")
    if links.default_gateway(pod) != str(GATEWAY):
        problems.append(f"the pod's default route is not via {GATEWAY}")
    return problems
