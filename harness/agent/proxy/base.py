"""The seam every proxy mode plugs into, and the two kernel helpers they share.

At start and periodically a mode gets the complete desired list of
``ServicePort`` s, ``full_sync`` (rebuild, repairing drift). On each change the
services controller hands it only what its pass changed, ``apply`` with a
``PortChanges`` — the changed ports, the removed idents and what they were —
as kube-proxy's and Felix's change trackers do: a pass at 10,000 Services then
costs the work of the ports that moved, not a comparison of every port.
``PortChanges.current`` is the controller's whole desired table (read-only) for
a mode that must fall back to a full sync or that only knows how to program a
whole list. ``update`` (the whole list; the mode diffs it against what it
programmed) remains for callers holding a list: tests and tools. Computing the
ports (selectors, readiness, named ports) is the controller's job, not a mode's.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from pyroute2 import IPRoute, NetNS

from harness.agent.proxy.model import ServicePort
from harness.exec import run

LOCAL_TABLE = 255


@dataclass(frozen=True)
class PortChanges:
    """What one programming pass changed, by ident (``ServicePort.ident``).

    ``changed``: ports new or different since the last pass (as they are now);
    ``removed``: idents no longer programmed; ``previous``: each of those
    idents' port as it was (absent for a new one); ``current``: every port now
    (the controller's table, not to be modified; a mode's full-sync fallback)."""

    changed: Mapping[str, ServicePort] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    previous: Mapping[str, ServicePort] = field(default_factory=dict)
    current: Mapping[str, ServicePort] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed)

    def idents(self) -> list[str]:
        """Every ident that moved, sorted (changed and removed)."""
        return sorted(self.changed.keys() | self.removed)


def changes_between(old: Mapping[str, ServicePort], services: Iterable[ServicePort]) -> PortChanges:
    """The ``PortChanges`` from ``old`` (by ident) to the whole list ``services``
    (O(ports): for ``update`` with a list, and the tests' reference)."""
    new = {s.ident: s for s in services}
    changed = {k: s for k, s in new.items() if (o := old.get(k)) is not s and o != s}
    removed = frozenset(old.keys() - new.keys())
    previous = {k: old[k] for k in changed.keys() | removed if k in old}
    return PortChanges(changed, removed, previous, new)


K = TypeVar("K")


def move_counts(users: Counter[K], moves: Iterable[tuple[set[K], set[K]]]) -> tuple[set[K], set[K]]:
    """Move ``users`` (how many ports use each key: an endpoint address, a conntrack
    target) by each port's (was, now) keys; returns (keys now in use that were not,
    keys no longer in use). Kept per change, so a pass costs its changed ports only
    (the nftables mode's hairpin set, the sweeper's endpoints)."""
    had: dict[K, bool] = {}  # each key touched: in use before these moves?
    for was, now in moves:
        for k in now - was:
            had.setdefault(k, k in users)
            users[k] += 1
        for k in was - now:
            had.setdefault(k, k in users)
            users[k] -= 1
            if users[k] <= 0:
                del users[k]
    came = {k for k, before in had.items() if not before and k in users}
    left = {k for k, before in had.items() if before and k not in users}
    return came, left


class ServiceProxy(Protocol):
    name: str

    def full_sync(self, services: Iterable[ServicePort]) -> None: ...

    def apply(self, changes: PortChanges) -> None: ...

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
