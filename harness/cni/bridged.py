"""Flannel-family pod interfaces (mode ``bridge``): a veth into the node's bridge ``cni0``.

Kernel objects: bridge ``cni0`` (created on first use) holding the subnet's
gateway address (its first host address, ``FLANNEL_SUBNET``) at the network's
MTU; per pod a veth ``veth<8 hex>`` (a port of ``cni0``, hairpin on, as the
bridge plugin's ``hairpinMode``) ↔ ``eth0`` in the pod with its address in the
node subnet and the default route via the gateway. Pods of one node talk over
the bridge; other traffic is routed by the node.

This is what flannel's plugin gets by delegating to the reference ``bridge`` and
``host-local`` plugins; podlab does it itself (docs/cni.md: one process per ADD
instead of three, and an IPAM with GC).
"""

from __future__ import annotations

import ipaddress
from functools import partial
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.agent import netlink as nl
from harness.cni import links
from harness.cni.netconf import NetConf, NodeSubnet

EEXIST = 17


def host_if_name(seed: str) -> str:
    return links.host_if_name("veth", 8, seed)


def _not_bridge(msg: Any) -> str | None:
    info = nl.attr(msg, "IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return None if kind == "bridge" else f"is a {kind or 'plain'} link, not a bridge"


def ensure_bridge(
    host: IPRoute, name: str, gateway: ipaddress.IPv4Interface, mtu: int
) -> tuple[int, str]:
    """The bridge with the gateway address, up, at ``mtu``: (ifindex, MAC).

    Two netlink calls when all is in place (one get, one address dump); safe
    against concurrent ADDs. A new bridge gets a MAC of its own (from the
    subnet): a bridge otherwise takes its lowest port's MAC and changes it as
    pods come and go, which pods see as their gateway moving.
    """
    msg = links.get_link(host, name)
    if msg is None:
        try:
            host.link(
                "add",
                ifname=name,
                kind="bridge",
                mtu=mtu,
                address=nl.stable_mac(f"{name}/{gateway.network}"),
            )
        except NetlinkError as exc:
            if exc.code != EEXIST:
                raise
        msg = links.get_link(host, name)
        if msg is None:
            raise RuntimeError(f"bridge {name} vanished right after creation")
    elif (reason := _not_bridge(msg)) is not None:
        raise RuntimeError(f"{name} {reason}; remove it or choose another bridge name")
    idx = int(msg["index"])
    changes: dict[str, Any] = {}
    if nl.attr(msg, "IFLA_MTU") != mtu:
        changes["mtu"] = mtu
    if not msg["flags"] & 1:
        changes["state"] = "up"
    if changes:
        host.link("set", index=idx, **changes)
    have = links.addresses(host, idx)
    want = f"{gateway.ip}/{gateway.network.prefixlen}"
    for stale in have - {want}:  # the node's previous lease
        address, plen = stale.split("/")
        nl.ignore_missing(
            partial(host.addr, "del", index=idx, address=address, prefixlen=int(plen))
        )
    if want not in have:
        links.ensure_addr_tolerant(host, idx, str(gateway.ip), gateway.network.prefixlen)
    return idx, str(nl.attr(msg, "IFLA_ADDRESS", ""))


def add(
    host: IPRoute,
    pod: IPRoute,
    netns: str,
    ifname: str,
    host_if: str,
    tag: str,
    seed: str,
    address: str,
    node: NodeSubnet,
    conf: NetConf,
    mtu: int,
) -> dict[str, Any]:
    """Plumb one pod; returns the result (1.1.0 shape, before version conversion)."""
    bridge, bridge_mac = ensure_bridge(host, conf.bridge, node.gateway, mtu)
    veth = links.make_veth(host, pod, netns, ifname, host_if, mtu, tag, seed, master=bridge)
    if conf.hairpin:
        host.brport("set", index=veth.host_index, mode=1)
    prefix = node.subnet.prefixlen
    pod.addr("add", index=veth.pod_index, address=address, prefixlen=prefix)
    pod.link("set", index=veth.pod_index, state="up")
    gw = str(node.gateway.ip)
    pod.route("replace", dst="0.0.0.0", dst_len=0, gateway=gw)
    links.announce(host, bridge, netns, ifname, veth.pod_mac, address)
    return {
        "interfaces": [
            {"name": conf.bridge, "mac": bridge_mac},
            {"name": host_if, "mac": veth.host_mac, "mtu": mtu},
            {"name": ifname, "mac": veth.pod_mac, "mtu": mtu, "sandbox": netns},
        ],
        "ips": [{"address": f"{address}/{prefix}", "gateway": gw, "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0", "gw": gw}],
        "dns": {},
    }


def check(
    host: IPRoute, pod: IPRoute, ifname: str, host_if: str, address: str, conf: NetConf, mtu: int
) -> list[str]:
    """What differs from a fresh ADD (empty: all as plumbed)."""
    problems = []
    br = links.link_state(host, conf.bridge)
    veth = links.link_state(host, host_if)
    eth = links.link_state(pod, ifname)
    if br is None:
        problems.append(f"bridge {conf.bridge} is missing")
    if veth is None:
        problems.append(f"node-side veth {host_if} is missing")
    elif br is not None and veth["master"] != br["index"]:
        problems.append(f"{host_if} is not a port of {conf.bridge}")
    if eth is None:
        return [*problems, f"{ifname} is missing in the pod"]
    if not eth["up"]:
        problems.append(f"{ifname} is down")
    if eth["mtu"] != mtu:
        problems.append(f"{ifname} has MTU {eth['mtu']}, expected {mtu}")
    if address not in links.addresses(pod, eth["index"]):
        problems.append(f"{ifname} lacks address {address}")
    gw = links.default_gateway(pod)
    if br is not None:
        want = sorted(links.addresses(host, br["index"]))
        if not want or gw != want[0].split("/")[0]:
            problems.append(f"default route via {gw}, expected the bridge's {want}")
    return problems
