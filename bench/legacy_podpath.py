"""The agent's pod plumbing before podlab-cni (commit f63d67b), frozen as a benchmark baseline.

Only ``bench_cni.py`` uses it, to compare the plugin path with what the agent
did itself: pyroute2 ``netns.create`` (a forked child), the veth with its pod
end created in the pod's namespace, ``IPRoute(netns=…)`` (another forked child)
twice for the pod side, the node side (bridge port with hairpin, or proxy-ARP
and a /32 route), an address from memory. Removal: delete the node-side veth
and the namespace. Kept verbatim in substance from ``harness/agent/pods.py``
``_plumb``/``remove`` and ``podnet.py``/``routed.py`` of that commit.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from pyroute2 import IPRoute, netns

from harness.agent import netlink as nl

BRIDGE = "cni0"
GATEWAY = "169.254.1.1"


@dataclass
class Made:
    path: str
    host_if: str
    ip: str


class DirectPath:
    """Attach and remove pods the old way, in the calling process's namespace."""

    def __init__(self, mode: str, gateway: str, mtu: int) -> None:
        self.mode, self.mtu = mode, mtu
        self.gateway = ipaddress.IPv4Interface(gateway)
        self.ipr = IPRoute()
        self.used: set[str] = set()
        if mode == "bridge":
            idx = nl.ensure_link(self.ipr, BRIDGE, {"kind": "bridge"})
            nl.ensure_addr(self.ipr, idx, self.gateway)
            nl.ensure_up(self.ipr, idx, mtu)

    def _allocate(self) -> str:
        for host in self.gateway.network.hosts():
            if host != self.gateway.ip and str(host) not in self.used:
                self.used.add(str(host))
                return str(host)
        raise RuntimeError("subnet full")

    def add(self, path: str, seed: str) -> Made:
        digest = hashlib.sha256(seed.encode()).hexdigest()
        host_if = ("veth" + digest[:8]) if self.mode == "bridge" else ("cali" + digest[:11])
        ip = self._allocate()
        netns.create(path)
        with IPRoute(netns=path) as pod:
            for idx in pod.link_lookup(ifname="eth0"):
                pod.link("del", index=idx)
        nl.ignore_missing(lambda: self.ipr.link("del", ifname=host_if))
        peer = {"ifname": "eth0", "net_ns_fd": path, "mtu": self.mtu}
        self.ipr.link("add", ifname=host_if, kind="veth", mtu=self.mtu, peer=peer)
        host_mac = str(nl.attr(nl.link(self.ipr, host_if), "IFLA_ADDRESS"))
        with IPRoute(netns=path) as pod:
            pod.link("set", index=pod.link_lookup(ifname="lo")[0], state="up")
            eth0 = pod.link_lookup(ifname="eth0")[0]
            if self.mode == "bridge":
                pod.addr("add", index=eth0, address=ip, prefixlen=self.gateway.network.prefixlen)
                pod.link("set", index=eth0, state="up", mtu=self.mtu)
                pod.route("replace", dst="0.0.0.0", dst_len=0, gateway=str(self.gateway.ip))
            else:
                nl.ensure_addr(pod, eth0, ipaddress.IPv4Interface(f"{ip}/32"))
                pod.link("set", index=eth0, state="up", mtu=self.mtu)
                pod.route("replace", dst=GATEWAY, dst_len=32, oif=eth0, scope=253)
                pod.neigh("replace", dst=GATEWAY, lladdr=host_mac, ifindex=eth0,
                          state=nl.NUD_PERMANENT)  # fmt: skip
                pod.route("replace", dst="0.0.0.0", dst_len=0, gateway=GATEWAY, oif=eth0)
        self._attach(host_if, ip)
        return Made(path, host_if, ip)

    def _attach(self, host_if: str, ip: str) -> None:
        idx = nl.ifindex(self.ipr, host_if)
        assert idx is not None
        if self.mode == "bridge":
            bridge = nl.ifindex(self.ipr, BRIDGE)
            msg = self.ipr.get_links(idx)[0]
            if nl.attr(msg, "IFLA_MASTER") != bridge:
                self.ipr.link("set", index=idx, master=bridge)
                self.ipr.brport("set", index=idx, mode=1)
            nl.ensure_up(self.ipr, idx)
        else:
            nl.ensure_up(self.ipr, idx)
            nl.set_sysctl(f"net/ipv4/conf/{host_if}/proxy_arp", "1")
            nl.set_sysctl(f"net/ipv4/neigh/{host_if}/proxy_delay", "0")
            self.ipr.route("replace", dst=ip, dst_len=32, oif=idx, scope=253, proto=78)

    def remove(self, made: Made) -> None:
        if self.mode == "routed":
            nl.ignore_missing(
                lambda: self.ipr.route("del", dst=made.ip, dst_len=32, scope=253, proto=78)
            )
        nl.ignore_missing(lambda: self.ipr.link("del", ifname=made.host_if))
        netns.remove(made.path)
        self.used.discard(made.ip)
