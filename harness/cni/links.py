"""What both pod interface styles share: the veth pair, its alias, and reading it back.

The pod end is created directly inside the pod's namespace (``net_ns_fd``), so
it never appears in the node's namespace under the pod's interface name. The
node end carries an alias ``podlab-cni <network> <containerID> <ifname>``: DEL
and GC remove a node-side veth only when the alias says it is the attachment's
(a recreated pod of the same name gets the same veth name, and must not lose
its new interface to the old pod's late DEL).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from functools import partial
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.agent import netlink as nl
from harness.cni import nsutil
from harness.cni.spec import INTERNAL, CniError

ALIAS_PREFIX = "podlab-cni "
ENOENT = 2
EEXIST = 17
ENODEV = 19


def alias(network: str, container_id: str, ifname: str) -> str:
    return f"{ALIAS_PREFIX}{network} {container_id} {ifname}"


def parse_alias(text: str) -> tuple[str, str, str] | None:
    """(network, containerID, ifname) from a node-side veth's alias, if it is ours."""
    if not text.startswith(ALIAS_PREFIX):
        return None
    parts = text[len(ALIAS_PREFIX) :].split(" ")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def host_if_name(prefix: str, width: int, seed: str) -> str:
    """``prefix`` + ``width`` hex digits of sha256(seed): deterministic, ≤ 15 chars."""
    return prefix + hashlib.sha256(seed.encode()).hexdigest()[:width]


def macs(seed: str) -> tuple[str, str]:
    """Locally administered unicast MACs for the node end and the pod end, from the seed.

    Chosen here rather than read back: two netlink calls fewer per ADD, and a
    re-attached pod keeps the MACs its neighbours know.
    """
    h = hashlib.sha256(f"podlab-cni/{seed}".encode()).digest()
    host = ":".join(f"{b:02x}" for b in (0x0A, *h[:5]))
    pod = ":".join(f"{b:02x}" for b in (0x0A, *h[5:10]))
    return host, pod


@dataclass(frozen=True)
class Veth:
    """A created pair: the node end and the pod end, with their MACs and indexes."""

    host_if: str
    host_index: int
    host_mac: str
    pod_if: str
    pod_index: int
    pod_mac: str


def get_link(ipr: IPRoute, name: str) -> Any | None:
    """One link by name (a single RTM_GETLINK), or None."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code in (ENODEV, ENOENT):
            return None
        raise


def make_veth(
    host: IPRoute,
    pod: IPRoute,
    netns: str,
    ifname: str,
    host_if: str,
    mtu: int,
    tag: str,
    seed: str,
    master: int | None = None,
) -> Veth:
    """The veth pair, node end up (and a port of ``master``), pod end still down.

    A leftover node end of the same name (its pod is gone) is replaced.
    """
    host_mac, pod_mac = macs(seed)
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        peer = {"ifname": ifname, "net_ns_fd": fd, "mtu": mtu, "address": pod_mac}
        spec: dict[str, Any] = {"ifname": host_if, "kind": "veth", "mtu": mtu, "address": host_mac}
        if master is not None:
            spec["master"] = master
        for attempt in (1, 2):
            try:
                host.link("add", peer=peer, **spec)
                break
            except NetlinkError as exc:
                stale = get_link(host, host_if) if exc.code == EEXIST else None
                if stale is None or attempt == 2:
                    raise CniError(
                        INTERNAL, f"cannot create veth {host_if}/{ifname}: {exc}"
                    ) from exc
                nl.ignore_missing(partial(host.link, "del", index=stale["index"]))
    finally:
        os.close(fd)
    hidx = host.link_lookup(ifname=host_if)
    pidx = pod.link_lookup(ifname=ifname)
    if not hidx or not pidx:
        raise CniError(INTERNAL, f"veth {host_if}/{ifname} vanished right after creation")
    host.link("set", index=hidx[0], ifalias=tag, state="up")
    return Veth(host_if, int(hidx[0]), host_mac, ifname, int(pidx[0]), pod_mac)


def owned_links(host: IPRoute, network: str) -> dict[str, tuple[int, str, str]]:
    """Node-side veths podlab-cni made for ``network``: name → (index, containerID, ifname)."""
    out = {}
    for msg in host.get_links():
        owner = parse_alias(str(nl.attr(msg, "IFLA_IFALIAS", "")))
        if owner is not None and owner[0] == network:
            out[str(nl.attr(msg, "IFLA_IFNAME"))] = (int(msg["index"]), owner[1], owner[2])
    return out


def delete_host_if(host: IPRoute, host_if: str, tag: str) -> bool:
    """Delete the node end ``host_if`` if its alias is ``tag``; True if it was deleted."""
    msg = get_link(host, host_if)
    if msg is None or str(nl.attr(msg, "IFLA_IFALIAS", "")) != tag:
        return False
    nl.ignore_missing(lambda: host.link("del", index=msg["index"]))
    return True


def delete_pod_if(pod: IPRoute, ifname: str) -> bool:
    """Delete ``ifname`` in the pod namespace (its veth peer goes with it)."""
    try:
        pod.link("del", ifname=ifname)
        return True
    except NetlinkError as exc:
        if exc.code in (ENODEV, ENOENT):
            return False
        raise


def link_state(ipr: IPRoute, name: str) -> dict[str, Any] | None:
    """Name, index, MAC, MTU, up, master and alias of a link, or None."""
    msg = get_link(ipr, name)
    if msg is None:
        return None
    return {
        "index": int(msg["index"]),
        "mac": str(nl.attr(msg, "IFLA_ADDRESS", "")),
        "mtu": int(nl.attr(msg, "IFLA_MTU", 0)),
        "up": bool(msg["flags"] & 1),
        "master": nl.attr(msg, "IFLA_MASTER"),
        "alias": str(nl.attr(msg, "IFLA_IFALIAS", "")),
    }


def addresses(ipr: IPRoute, index: int) -> set[str]:
    """IPv4 ``address/prefix`` strings on a link."""
    return {
        f"{nl.attr(a, 'IFA_ADDRESS')}/{a['prefixlen']}"
        for a in ipr.get_addr(index=index, family=nl.AF_INET)
    }


def default_gateway(ipr: IPRoute) -> str | None:
    for r in ipr.get_routes(family=nl.AF_INET, table=nl.MAIN_TABLE):
        if r["dst_len"] == 0:
            return str(nl.attr(r, "RTA_GATEWAY", "")) or None
    return None


def ensure_addr_tolerant(ipr: IPRoute, index: int, address: str, prefixlen: int) -> None:
    """Add an address unless present (a concurrent ADD may add it first: EEXIST is fine)."""
    if f"{address}/{prefixlen}" in addresses(ipr, index):
        return
    try:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
    except NetlinkError as exc:
        if exc.code != EEXIST:
            raise


ETH_P_ARP = 0x0806


def garp_frame(mac: str, ip: str) -> bytes:
    """A broadcast gratuitous ARP request: who-has ``ip`` tell ``ip`` at ``mac`` (pure)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = ipaddress.IPv4Address(ip).packed
    eth = b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + addr + b"\x00" * 6 + addr
    return eth + arp


def announce(host: IPRoute, bridge: int, netns: str, ifname: str, mac: str, ip: str) -> None:
    """Make the node and the bridge's other pods forget a MAC ``ip`` had before.

    A new pod often gets the address of a pod just deleted (the lowest free one),
    and neighbour entries on the bridge outlive that pod's veth: the node's entry
    still names the old MAC, REACHABLE for up to ~45 s, then seconds of failing
    unicast probes (measured: 22 s before the node reached a new pod), and
    everything routed to the pod through the node, readiness probes included, is
    lost meanwhile. So the node's entry is deleted and the pod sends one
    gratuitous ARP (the reference bridge plugin announces new addresses too).
    """
    nl.ignore_missing(partial(host.neigh, "del", dst=ip, ifindex=bridge))
    with nsutil.socket_in(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((ifname, ETH_P_ARP))
        s.send(garp_frame(mac, ip))
