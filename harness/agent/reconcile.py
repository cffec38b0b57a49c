"""The shared reconciler: desired peer objects against the kernel, for every mode.

The mode says what one peer needs; this module owns everything else (the Felix
and flannel pattern): it asks the mode for every accepted peer's objects, compares
them with what the kernel has (routes stamped with proto 77, permanent neighbours
and FDB entries on the mode's devices), applies what is missing or different with
``replace``, and deletes what is ours but no longer wanted. Calling it again with
the same peers changes nothing. That is the whole restart story too: a fresh
agent reconciles from etcd and ends with no duplicates and no stale entries.

What the kernel has is read (dumped) on a full pass only: the first, the agent's
periodic resync (which puts back what someone deleted by hand), one after a failed
change, and one after a mode device was recreated. Between them a pass compares
with what the last read found plus what this reconciler applied since, so one
peer's change costs its own netlink calls, not three dumps of every peer's
objects decoded in Python (172–379 ms at 1,000 peers before, ``bench/
bench_programming.py``) — flanneld's per-event handling and Felix's route cache,
with their periodic refresh for drift.
"""

from __future__ import annotations

import ipaddress
import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.agent import netlink as nl
from harness.agent.datapath.base import (
    RTPROT_PODLAB,
    Datapath,
    Peer,
    RouteSpec,
)

log = logging.getLogger("podlab.reconcile")


@dataclass
class Known:
    """The kernel's objects of ours as last read, plus what was applied since."""

    index: dict[str, int | None]  # the mode's devices' ifindexes at the read
    routes: dict[ipaddress.IPv4Network, RouteSpec]
    neighs: dict[tuple[str, str], str]  # (device, IP) → MAC
    fdbs: dict[tuple[str, str], str]  # (device, MAC) → underlay IP


@dataclass
class Keyed:
    """One peer's objects as the reconciler compares them (derived once per Peer)."""

    routes: list[tuple[ipaddress.IPv4Network, RouteSpec]]
    neighs: list[tuple[tuple[str, str], str]]
    fdbs: list[tuple[tuple[str, str], str]]


def same(a: list[Peer], b: list[Peer]) -> bool:
    """The same Peer objects in the same order (``b`` is kept alive: ids are not reused)."""
    return len(a) == len(b) and all(map(operator.is_, a, b))


@dataclass
class SyncReport:
    """What one pass changed, and the problems the mode reported."""

    added: int = 0
    removed: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


class Reconciler:
    """Diffs and applies one mode's desired objects in the current namespace."""

    def __init__(self, ipr: IPRoute, datapath: Datapath) -> None:
        self.ipr = ipr
        self.dp = datapath
        self.known: Known | None = None  # None: the next pass reads the kernel
        self.objects: dict[int, tuple[Peer, Keyed]] = {}  # id(peer) → (it, its objects)
        self.told: list[Peer] = []  # what the mode's peers_changed last saw

    def sync(self, peers: list[Peer], full: bool = True) -> SyncReport:
        """Bring the kernel to exactly what ``peers`` need; safe to call any time.

        ``full`` reads the kernel first (drift repair) and tells the mode the peers
        again; otherwise the pass trusts what the last read found and what was
        applied since (unless that is unknown or a mode device changed its
        ifindex), and the mode hears of the peers only when they changed. A Peer
        object handed again (the agent's PeerCache keeps one per unchanged lease) reuses the
        objects the mode derived for it: every mode's ``peer_objects`` depends on
        the peer and the mode's fixed configuration only."""
        accepted, problems = self.dp.refuse(peers)
        report = SyncReport(problems=problems)
        routes: dict[ipaddress.IPv4Network, RouteSpec] = {}
        neighs: dict[tuple[str, str], str] = {}  # (device, IP) → MAC
        fdbs: dict[tuple[str, str], str] = {}  # (device, MAC) → underlay IP
        objects: dict[int, tuple[Peer, Keyed]] = {}
        for peer in accepted:
            hit = self.objects.get(id(peer))
            keyed = hit[1] if hit is not None and hit[0] is peer else self._keyed(peer)
            objects[id(peer)] = (peer, keyed)
            routes.update(keyed.routes)
            neighs.update(keyed.neighs)
            fdbs.update(keyed.fdbs)
        self.objects = objects
        if full or not same(accepted, self.told):
            self.told = []
            self.dp.peers_changed(accepted)
            self.told = accepted
        index = {d: nl.ifindex(self.ipr, d) for d in self.dp.devices()}
        known = self.known
        if full or known is None or known.index != index:
            known = self._read(index)
        self.known = None  # until this pass has applied everything it meant to
        self._routes(routes, known.routes, report)
        self._neighs(neighs, known.neighs, index, report)
        self._fdbs(fdbs, known.fdbs, index, report)
        if not report.failed:
            self.known = known
        return report

    def _keyed(self, peer: Peer) -> Keyed:
        objs = self.dp.peer_objects(peer)
        return Keyed(
            [(r.dst, r) for r in objs.routes],
            [((n.dev, str(n.ip)), n.mac) for n in objs.neighs],
            [((f.dev, f.mac), str(f.dst)) for f in objs.fdbs],
        )

    def _read(self, index: dict[str, int | None]) -> Known:
        """Our routes, and the permanent neighbours and FDB entries on the mode's devices."""
        routes: dict[ipaddress.IPv4Network, RouteSpec] = {}
        names = {m["index"]: str(nl.attr(m, "IFLA_IFNAME")) for m in self.ipr.get_links()}
        for r in self.ipr.get_routes(table=nl.MAIN_TABLE, family=nl.AF_INET, proto=RTPROT_PODLAB):
            if r["proto"] != RTPROT_PODLAB:
                continue
            dst = ipaddress.IPv4Network(f"{nl.attr(r, 'RTA_DST', '0.0.0.0')}/{r['dst_len']}")
            gw = nl.attr(r, "RTA_GATEWAY")
            oif = nl.attr(r, "RTA_OIF")
            dev = names.get(oif, f"if{oif}") if oif else None
            via = ipaddress.IPv4Address(gw) if gw else None
            routes[dst] = RouteSpec(dst, via, dev, bool(r["flags"] & nl.RTNH_F_ONLINK))
        neighs: dict[tuple[str, str], str] = {}
        fdbs: dict[tuple[str, str], str] = {}
        for dev, idx in index.items():
            if idx is None:
                continue
            for n in self.ipr.get_neighbours(ifindex=idx, family=nl.AF_INET):
                if n["ifindex"] == idx and n["state"] & nl.NUD_PERMANENT:
                    neighs[(dev, nl.attr(n, "NDA_DST"))] = str(nl.attr(n, "NDA_LLADDR", ""))
            for f in self.ipr.fdb("dump", ifindex=idx):
                dst = nl.attr(f, "NDA_DST")
                if f["ifindex"] == idx and dst and f["state"] & nl.NUD_PERMANENT:
                    fdbs[(dev, str(nl.attr(f, "NDA_LLADDR")))] = dst
        return Known(index, routes, neighs, fdbs)

    def _try(self, report: SyncReport, what: str, fn: object, **kw: object) -> bool:
        try:
            fn(**kw)  # type: ignore[operator]
            return True
        except NetlinkError as exc:
            report.failed += 1
            log.error("%s failed: %s", what, exc)
            return False

    # -- routes ---------------------------------------------------------------
    def _routes(
        self,
        want: dict[ipaddress.IPv4Network, RouteSpec],
        have: dict[ipaddress.IPv4Network, RouteSpec],
        report: SyncReport,
    ) -> None:
        """Converge; ``have`` is updated with what succeeded."""
        for dst, spec in list(have.items()):
            if dst not in want and self._del_route(spec, report):
                del have[dst]
                log.info("removed stale route %s", dst)
        for dst, spec in want.items():
            cur = have.get(dst)
            if cur is not spec and cur != spec:  # `is`: applied from the same Keyed
                kw: dict[str, object] = {
                    "dst": str(dst.network_address),
                    "dst_len": dst.prefixlen,
                    "proto": RTPROT_PODLAB,
                    "table": nl.MAIN_TABLE,
                }
                if spec.via:
                    kw["gateway"] = str(spec.via)
                if spec.dev:
                    idx = nl.ifindex(self.ipr, spec.dev)
                    if idx is None:
                        report.failed += 1
                        log.error("route %s: device %s missing", dst, spec.dev)
                        continue
                    kw["oif"] = idx
                if spec.onlink:
                    kw["flags"] = nl.RTNH_F_ONLINK
                if self._try(report, f"route {dst}", self.ipr.route, command="replace", **kw):
                    have[dst] = spec
                    report.added += 1

    def _del_route(self, spec: RouteSpec, report: SyncReport) -> bool:
        ok = self._try(
            report,
            f"delete route {spec.dst}",
            lambda: nl.ignore_missing(
                lambda: self.ipr.route(
                    "del",
                    dst=str(spec.dst.network_address),
                    dst_len=spec.dst.prefixlen,
                    proto=RTPROT_PODLAB,
                    table=nl.MAIN_TABLE,
                )
            ),
        )
        if ok:
            report.removed += 1
        return ok

    # -- neighbours and FDB -------------------------------------------------------
    def _neighs(
        self,
        want: dict[tuple[str, str], str],
        have: dict[tuple[str, str], str],
        index: dict[str, int | None],
        report: SyncReport,
    ) -> None:
        self._converge(
            report,
            have,
            want,
            lambda dev, ip, _mac: self._try(
                report,
                f"delete neigh {ip}",
                self.ipr.neigh,
                command="del",
                ifindex=index[dev],
                dst=ip,
            ),
            lambda dev, ip, mac: (
                index.get(dev) is not None
                and self._try(
                    report,
                    f"neigh {ip}",
                    self.ipr.neigh,
                    command="replace",
                    ifindex=index[dev],
                    dst=ip,
                    lladdr=mac,
                    state=nl.NUD_PERMANENT,
                )
            ),
        )

    def _fdbs(
        self,
        want: dict[tuple[str, str], str],
        have: dict[tuple[str, str], str],
        index: dict[str, int | None],
        report: SyncReport,
    ) -> None:
        self._converge(
            report,
            have,
            want,
            lambda dev, mac, dst: self._try(
                report,
                f"delete fdb {mac}",
                self.ipr.fdb,
                command="del",
                ifindex=index[dev],
                lladdr=mac,
                dst=dst,
                flags=nl.NTF_SELF,
            ),
            lambda dev, mac, dst: (
                index.get(dev) is not None
                and self._try(
                    report,
                    f"fdb {mac}",
                    self.ipr.fdb,
                    command="replace",
                    ifindex=index[dev],
                    lladdr=mac,
                    dst=dst,
                    state=nl.NUD_PERMANENT,
                    flags=nl.NTF_SELF,
                )
            ),
        )

    @staticmethod
    def _converge(
        report: SyncReport,
        have: dict[tuple[str, str], str],
        want: dict[tuple[str, str], str],
        delete: Callable[[str, str, str], bool],
        add: Callable[[str, str, str], bool],
    ) -> None:
        """Delete what the kernel has and we don't want; add or replace what differs.

        Keys are (device, address), values what the entry must point at (a MAC for a
        neighbour, an underlay IP for an FDB entry): shared by neighbours and FDB.
        ``have`` is updated with what succeeded.
        """
        for (dev, key), value in list(have.items()):
            if (dev, key) not in want and delete(dev, key, value):
                del have[(dev, key)]
                report.removed += 1
        for (dev, key), value in want.items():
            if have.get((dev, key)) != value and add(dev, key, value):
                have[(dev, key)] = value
                report.added += 1
