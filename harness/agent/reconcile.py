"""The shared reconciler: desired peer objects against the kernel, for every mode.

The mode says what one peer needs; this module owns everything else (the Felix
and flannel pattern): it asks the mode for every accepted peer's objects, reads
the kernel once (routes stamped with proto 77, permanent neighbours and FDB
entries on the mode's devices), applies what is missing or different with
``replace``, and deletes what is ours but no longer wanted. Calling it again with
the same peers changes nothing; calling it after someone deleted a route puts the
route back. That is the whole restart story too: a fresh agent reconciles from
etcd and ends with no duplicates and no stale entries.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.agent import netlink as nl
from harness.agent.datapath.base import (
    RTPROT_PODLAB,
    Datapath,
    FdbSpec,
    NeighSpec,
    Peer,
    RouteSpec,
)

log = logging.getLogger("podlab.reconcile")


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

    def sync(self, peers: list[Peer]) -> SyncReport:
        """Bring the kernel to exactly what ``peers`` need; safe to call any time."""
        accepted, problems = self.dp.refuse(peers)
        report = SyncReport(problems=problems)
        routes: dict[ipaddress.IPv4Network, RouteSpec] = {}
        neighs: dict[tuple[str, str], NeighSpec] = {}
        fdbs: dict[tuple[str, str], FdbSpec] = {}
        for peer in accepted:
            objs = self.dp.peer_objects(peer)
            routes.update({r.dst: r for r in objs.routes})
            neighs.update({(n.dev, str(n.ip)): n for n in objs.neighs})
            fdbs.update({(f.dev, f.mac): f for f in objs.fdbs})
        self.dp.peers_changed(accepted)
        index = {d: nl.ifindex(self.ipr, d) for d in self.dp.devices()}
        self._routes(routes, report)
        self._neighs(neighs, index, report)
        self._fdbs(fdbs, index, report)
        return report

    def _try(self, report: SyncReport, what: str, fn: object, **kw: object) -> bool:
        try:
            fn(**kw)  # type: ignore[operator]
            return True
        except NetlinkError as exc:
            report.failed += 1
            log.error("%s failed: %s", what, exc)
            return False

    # -- routes ---------------------------------------------------------------
    def _routes(self, want: dict[ipaddress.IPv4Network, RouteSpec], report: SyncReport) -> None:
        have: dict[ipaddress.IPv4Network, RouteSpec] = {}
        names = {m["index"]: str(nl.attr(m, "IFLA_IFNAME")) for m in self.ipr.get_links()}
        for r in self.ipr.get_routes(table=nl.MAIN_TABLE, family=nl.AF_INET, proto=RTPROT_PODLAB):
            if r["proto"] != RTPROT_PODLAB:
                continue
            dst = ipaddress.IPv4Network(f"{nl.attr(r, 'RTA_DST', '0.0.0.0')}/{r['dst_len']}")
            gw = nl.attr(r, "RTA_GATEWAY")
            oif = nl.attr(r, "RTA_OIF")
            dev = names.get(oif, f"if{oif}") if oif else None
            spec = RouteSpec(
                dst,
                ipaddress.IPv4Address(gw) if gw else None,
                dev,
                bool(r["flags"] & nl.RTNH_F_ONLINK),
            )
            have[dst] = spec
        for dst, spec in have.items():
            if dst not in want and self._del_route(spec, report):
                log.info("removed stale route %s", dst)
        for dst, spec in want.items():
            if have.get(dst) != spec:
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
        want: dict[tuple[str, str], NeighSpec],
        index: dict[str, int | None],
        report: SyncReport,
    ) -> None:
        have: dict[tuple[str, str], str] = {}
        for dev, idx in index.items():
            if idx is None:
                continue
            for n in self.ipr.get_neighbours(ifindex=idx, family=nl.AF_INET):
                if n["ifindex"] == idx and n["state"] & nl.NUD_PERMANENT:
                    have[(dev, nl.attr(n, "NDA_DST"))] = str(nl.attr(n, "NDA_LLADDR", ""))
        self._converge(
            report,
            have,
            {key: spec.mac for key, spec in want.items()},
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
        want: dict[tuple[str, str], FdbSpec],
        index: dict[str, int | None],
        report: SyncReport,
    ) -> None:
        have: dict[tuple[str, str], str] = {}
        for dev, idx in index.items():
            if idx is None:
                continue
            for f in self.ipr.fdb("dump", ifindex=idx):
                dst = nl.attr(f, "NDA_DST")
                if f["ifindex"] == idx and dst and f["state"] & nl.NUD_PERMANENT:
                    have[(dev, str(nl.attr(f, "NDA_LLADDR")))] = dst
        self._converge(
            report,
            have,
            {key: str(spec.dst) for key, spec in want.items()},
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
        """
        for (dev, key), value in have.items():
            if (dev, key) not in want and delete(dev, key, value):
                report.removed += 1
        for (dev, key), value in want.items():
            if have.get((dev, key)) != value and add(dev, key, value):
                report.added += 1
