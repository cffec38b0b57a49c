"""The seam every proxy mode plugs into, and the two kernel helpers they share.

A mode gets the complete desired list of ``ServicePort`` s on every call: at
start and periodically ``full_sync`` (rebuild, repairing drift), on each change
``update`` (program only the difference where the mode can). Computing the
list (selectors, readiness, named ports) is the controller's job, not a mode's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Protocol

from pyroute2 import IPRoute, NetNS

from harness.agent.proxy.model import ServicePort
from harness.exec import run

LOCAL_TABLE = 255


class ServiceProxy(Protocol):
    name: str

    def full_sync(self, services: Iterable[ServicePort]) -> None: ...

    def update(self, services: Iterable[ServicePort]) -> None: ...

    def close(self) -> None: ...


def nft_script(doc: str, netns: str | None = None, timeout: float = 60.0) -> None:
    """Load one ``nft -f -`` script: a single atomic transaction (all or nothing)."""
    run(["nft", "-f", "-"], timeout=timeout, netns=netns, input=doc)


def local_service_route(service_cidr: str, netns: str | None = None, remove: bool = False) -> None:
    """Make the service CIDR local on this node (``local 10.96.0.0/16 dev lo``).

    Why: a packet to a ClusterIP that no rule DNATs must reach the input hook
    (reject there = immediate refusal) instead of being routed out or dropped
    for lack of a route, and the cluster DNS server can bind the kube-dns
    ClusterIP without a dummy device (IPVS mode's kube-ipvs0, simplified).
    """
    net = ipaddress.IPv4Network(service_cidr)
    ipr = NetNS(netns) if netns else IPRoute()
    try:
        have = [
            r
            for r in ipr.get_routes(table=LOCAL_TABLE)
            if r.get_attr("RTA_DST") == str(net.network_address) and r["dst_len"] == net.prefixlen
        ]
        if remove and not have:
            return
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.route(
            "del" if remove else "replace",
            dst=str(net.network_address),
            dst_len=net.prefixlen,
            type="local",
            table=LOCAL_TABLE,
            oif=lo,
            scope=254,  # host
        )
    finally:
        ipr.close()
