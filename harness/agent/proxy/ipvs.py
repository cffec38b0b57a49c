"""The ``ipvs`` proxy mode, built as kube-proxy's IPVS mode is.

Kernel objects (in the node's namespace):

- dummy interface ``kube-ipvs0`` holding every ClusterIP as a /32, so IPVS
  sees service traffic as local (kube-proxy's device; it stays down);
- one IPVS virtual server per ClusterIP:port/proto and per node address ×
  NodePort, scheduler ``rr`` unless configured (``ipvs_scheduler``), real
  servers = the ready endpoints with masquerading forwarding (``-m``); ClientIP
  session affinity is IPVS persistence (``-p timeout``);
- ipsets, the only thing that changes with services (the iptables rules
  below never do): ``PODLAB-CLUSTER-IP`` (hash:ip,port), ``PODLAB-LOOP-BACK``
  (hash:ip,port,ip: an endpoint reaching itself through its service),
  ``PODLAB-NODE-PORT-TCP``/``-UDP`` (bitmap:port), and for services without a
  ready endpoint ``PODLAB-NO-EP`` (hash:ip,port) and ``PODLAB-NO-EP-NP-TCP``/
  ``-UDP`` (bitmap:port);
- iptables-legacy chains of ours: nat ``PODLAB-IPVS-SVC`` (from PREROUTING and
  OUTPUT) marks for masquerade what comes from outside the cluster CIDR to a
  ClusterIP and everything to a NodePort; ``PODLAB-IPVS-POST`` (from
  POSTROUTING) masquerades marked and hairpin packets; filter
  ``PODLAB-IPVS-FILTER`` (from INPUT, FORWARD, OUTPUT) rejects service ports
  without endpoints (TCP reset / ICMP port unreachable: refused, not dropped).

IPVS is programmed with ``ipvsadm -R`` (the difference between what
``ipvsadm -Sn`` shows and what is wanted, in one process however many
services; never Debian's ``ipvsadm-restore``, a script that runs ``ipvsadm -C``
first: a diff restored through it left only the diff, so every change after the
first emptied the table: the named exception to "netlink through pyroute2", because
pyroute2's IPVS API has no persistence support and would cost one round trip
per object); ipsets with ``ipset restore`` (new sets filled, then swapped in
atomically). The host kernel of a netns lab has no IPVS: the mode refuses to
start there, with the reason (``IpvsUnavailable``).

A removed TCP endpoint is drained, as kube-proxy's graceful termination does:
while IPVS still counts connections to it, it stays with weight 0 (no new
connection goes there, open ones finish; ``expire_nodest_conn`` would end
them at once if it were deleted, and the terminating pod still answers during
its preStop), and a later pass deletes it once it has none, or after
``DRAIN_MAX_S``. UDP endpoints are deleted at once (kube-proxy's rule too).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute, NetNS

from harness.agent.proxy.base import PortChanges, local_service_route
from harness.agent.proxy.model import MASQ_MARK, ServicePort
from harness.errors import ToolError
from harness.exec import run

DUMMY = "kube-ipvs0"
IPTABLES = "iptables-legacy"
RESTORE = "iptables-legacy-restore"
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh")
SETS = {
    "PODLAB-CLUSTER-IP": "hash:ip,port",
    "PODLAB-LOOP-BACK": "hash:ip,port,ip",
    "PODLAB-NODE-PORT-TCP": "bitmap:port range 0-65535",
    "PODLAB-NODE-PORT-UDP": "bitmap:port range 0-65535",
    "PODLAB-NO-EP": "hash:ip,port",
    "PODLAB-NO-EP-NP-TCP": "bitmap:port range 0-65535",
    "PODLAB-NO-EP-NP-UDP": "bitmap:port range 0-65535",
}
JUMPS = [
    ("nat", "PREROUTING", "PODLAB-IPVS-SVC"),
    ("nat", "OUTPUT", "PODLAB-IPVS-SVC"),
    ("nat", "POSTROUTING", "PODLAB-IPVS-POST"),
    ("filter", "INPUT", "PODLAB-IPVS-FILTER"),
    ("filter", "FORWARD", "PODLAB-IPVS-FILTER"),
    ("filter", "OUTPUT", "PODLAB-IPVS-FILTER"),
]
SYSCTLS = {
    "net.ipv4.vs.conntrack": "1",  # IPVS traffic through conntrack: iptables can masquerade it
    "net.ipv4.vs.expire_nodest_conn": "1",  # a removed endpoint's connections end at once
    "net.ipv4.vs.expire_quiescent_template": "1",  # affinity leaves a removed endpoint
    "net.ipv4.conf.all.arp_ignore": "1",  # never answer ARP for ClusterIPs on kube-ipvs0
    "net.ipv4.conf.all.arp_announce": "2",
}


class IpvsUnavailable(RuntimeError):
    """This kernel (or namespace) has no IPVS: the mode cannot run here."""


@dataclass(frozen=True, order=True)
class VirtualServer:
    proto: str  # tcp | udp
    addr: str  # ip:port
    scheduler: str
    persistence_s: int | None


Where = tuple[str, str, str]  # a real server's (proto, vaddr, raddr)


@dataclass(frozen=True, order=True)
class RealServer:
    proto: str
    vaddr: str
    raddr: str
    weight: int = 1  # an endpoint listed N times in ServicePort.endpoints (mesh spill-over)

    @property
    def key(self) -> Where:
        """Which server it is, whatever its weight (a weight is edited in place)."""
        return (self.proto, self.vaddr, self.raddr)


def _flag(proto: str) -> str:
    return "-t" if proto == "tcp" else "-u"


def desired(
    services: Iterable[ServicePort], node_ips: Iterable[str], scheduler: str
) -> tuple[set[VirtualServer], set[RealServer]]:
    """Virtual and real servers for every service port that has endpoints."""
    vss: set[VirtualServer] = set()
    rss: set[RealServer] = set()
    ips = sorted(node_ips)
    for s in services:
        if not s.endpoints:
            continue
        addrs = [f"{s.cluster_ip}:{s.port}"]
        addrs += [f"{ip}:{s.node_port}" for ip in ips] if s.node_port else []
        weights = Counter(s.endpoints)  # a repeated endpoint carries a weight (the mesh's)
        # rr ignores weights; wrr is rr when every weight is 1, so only weighted ones move
        sched = "wrr" if scheduler == "rr" and max(weights.values()) > 1 else scheduler
        for addr in addrs:
            vss.add(VirtualServer(s.protocol, addr, sched, s.affinity_s))
            rss |= {
                RealServer(s.protocol, addr, f"{ep.ip}:{ep.port}", n) for ep, n in weights.items()
            }
    return vss, rss


def parse_saved(text: str) -> tuple[set[VirtualServer], set[RealServer]]:
    """``ipvsadm -Sn`` output → (virtual servers, real servers). Pure."""
    vss: set[VirtualServer] = set()
    rss: set[RealServer] = set()
    for line in text.splitlines():
        f = line.split()
        if len(f) < 3 or f[1] not in ("-t", "-u"):
            continue
        proto = "tcp" if f[1] == "-t" else "udp"
        opts = dict(zip(f[3::2], f[4::2], strict=False))
        if f[0] == "-A":
            persist = int(opts["-p"]) if "-p" in opts else None
            vss.add(VirtualServer(proto, f[2], opts.get("-s", "wlc"), persist))
        elif f[0] == "-a":
            weight = int(f[f.index("-w") + 1]) if "-w" in f[:-1] else 1  # "-m" takes no value
            rss.add(RealServer(proto, f[2], opts["-r"], weight))
    return vss, rss


DRAIN_MAX_S = 60.0  # a drained endpoint goes at the first pass after this, connections or not


def parse_connections(text: str) -> dict[Where, int]:
    """``ipvsadm -Ln`` output → active + inactive connections per real server. Pure."""
    out: dict[Where, int] = {}
    vs: tuple[str, str] | None = None
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] in ("TCP", "UDP"):
            vs = (f[0].lower(), f[1])
        elif vs and len(f) >= 6 and f[0] == "->" and f[-1].isdigit() and f[-2].isdigit():
            out[(*vs, f[1])] = int(f[-2]) + int(f[-1])
    return out


def restore_commands(
    have: tuple[set[VirtualServer], set[RealServer]],
    want: tuple[set[VirtualServer], set[RealServer]],
    drain: frozenset[Where] = frozenset(),
) -> list[str]:
    """``ipvsadm -R`` lines turning ``have`` into ``want`` (deletes first). Pure.

    ``drain``: removed real servers to keep with weight 0 instead of deleting.
    """
    have_vs = {(v.proto, v.addr): v for v in have[0]}
    want_vs = {(v.proto, v.addr): v for v in want[0]}
    lines = [f"-D {_flag(p)} {a}" for p, a in sorted(have_vs.keys() - want_vs.keys())]
    gone = have_vs.keys() - want_vs.keys()
    kept = {r.key for r in want[1]}
    for r in sorted(have[1] - want[1]):
        if (r.proto, r.vaddr) in gone or r.key in kept:
            continue
        if r.key not in drain:
            lines.append(f"-d {_flag(r.proto)} {r.vaddr} -r {r.raddr}")
        elif r.weight:
            lines.append(f"-e {_flag(r.proto)} {r.vaddr} -r {r.raddr} -m -w 0")
    for key in sorted(want_vs):
        v = want_vs[key]
        if have_vs.get(key) == v:
            continue
        verb = "-E" if key in have_vs else "-A"
        persist = f" -p {v.persistence_s}" if v.persistence_s else ""
        lines.append(f"{verb} {_flag(v.proto)} {v.addr} -s {v.scheduler}{persist}")
    had = {r.key for r in have[1]}
    for r in sorted(want[1] - have[1]):  # a new real server, or a new weight (edited in place:
        verb = "-e" if r.key in had else "-a"  # a delete would end its connections)
        lines.append(f"{verb} {_flag(r.proto)} {r.vaddr} -r {r.raddr} -m -w {r.weight}")
    return lines


def ipset_document(services: Iterable[ServicePort]) -> str:
    """``ipset restore`` input: fresh ``-new`` sets, filled, swapped in, dropped. Pure."""
    members: dict[str, set[str]] = {name: set() for name in SETS}
    for s in services:
        target = f"{s.cluster_ip},{s.protocol}:{s.port}"
        if s.endpoints:
            members["PODLAB-CLUSTER-IP"].add(target)
            members["PODLAB-LOOP-BACK"] |= {
                f"{ep.ip},{s.protocol}:{ep.port},{ep.ip}" for ep in s.endpoints
            }
            if s.node_port:
                members[f"PODLAB-NODE-PORT-{s.protocol.upper()}"].add(str(s.node_port))
        else:
            members["PODLAB-NO-EP"].add(target)
            if s.node_port:
                members[f"PODLAB-NO-EP-NP-{s.protocol.upper()}"].add(str(s.node_port))
    lines = []
    for name, kind in SETS.items():
        tmp = f"{name}-new"[:31]
        lines.append(f"create {name} {kind} -exist")
        lines.append(f"create {tmp} {kind} -exist")
        lines.append(f"flush {tmp}")
        lines += [f"add {tmp} {m}" for m in sorted(members[name])]
        lines += [f"swap {tmp} {name}", f"destroy {tmp}"]
    return "\n".join(lines) + "\n"


def iptables_document(cluster_cidr: str | None) -> str:
    """The constant chains (only the ipsets change with services). Pure."""
    mark = f"{MASQ_MARK:#x}"
    not_cluster = f"! -s {cluster_cidr} " if cluster_cidr else ""
    nat = [
        "*nat",
        ":PODLAB-IPVS-SVC - [0:0]",
        ":PODLAB-IPVS-NP - [0:0]",
        ":PODLAB-IPVS-MASQ - [0:0]",
        ":PODLAB-IPVS-POST - [0:0]",
        f"-A PODLAB-IPVS-SVC {not_cluster}-m set --match-set PODLAB-CLUSTER-IP dst,dst "
        "-j PODLAB-IPVS-MASQ",
        "-A PODLAB-IPVS-SVC -m addrtype --dst-type LOCAL -j PODLAB-IPVS-NP",
        "-A PODLAB-IPVS-NP -p tcp -m set --match-set PODLAB-NODE-PORT-TCP dst -j PODLAB-IPVS-MASQ",
        "-A PODLAB-IPVS-NP -p udp -m set --match-set PODLAB-NODE-PORT-UDP dst -j PODLAB-IPVS-MASQ",
        f"-A PODLAB-IPVS-MASQ -j MARK --or-mark {mark}",
        "-A PODLAB-IPVS-POST -m set --match-set PODLAB-LOOP-BACK dst,dst,src -j MASQUERADE",
        f"-A PODLAB-IPVS-POST -m mark ! --mark {mark}/{mark} -j RETURN",
        f"-A PODLAB-IPVS-POST -j MARK --xor-mark {mark}",
        "-A PODLAB-IPVS-POST -j MASQUERADE --random-fully",
        "COMMIT",
    ]
    local = "-m addrtype --dst-type LOCAL"
    filt = [
        "*filter",
        ":PODLAB-IPVS-FILTER - [0:0]",
        "-A PODLAB-IPVS-FILTER -p tcp -m set --match-set PODLAB-NO-EP dst,dst "
        "-j REJECT --reject-with tcp-reset",
        "-A PODLAB-IPVS-FILTER -p udp -m set --match-set PODLAB-NO-EP dst,dst "
        "-j REJECT --reject-with icmp-port-unreachable",
        f"-A PODLAB-IPVS-FILTER {local} -p tcp -m set --match-set PODLAB-NO-EP-NP-TCP dst "
        "-j REJECT --reject-with tcp-reset",
        f"-A PODLAB-IPVS-FILTER {local} -p udp -m set --match-set PODLAB-NO-EP-NP-UDP dst "
        "-j REJECT --reject-with icmp-port-unreachable",
        "COMMIT",
    ]
    return "\n".join([*nat, *filt]) + "\n"


def check_available(netns: str | None = None) -> None:
    """Raise IpvsUnavailable (with the kernel's reason) where IPVS cannot be used."""
    try:
        run(["ipvsadm", "-Ln"], timeout=20, netns=netns)
    except ToolError as exc:
        why = (exc.output.strip().splitlines() or [str(exc)])[-1]
        raise IpvsUnavailable(
            f"proxy mode ipvs needs the kernel's IPVS (ip_vs), which this kernel lacks ({why}); "
            "use proxy mode nftables or iptables here, or a VM lab (podlab up --backend vm)"
        ) from exc


class IpvsProxy:
    """The applier: constant iptables chains, ipsets swapped, IPVS diffed."""

    name = "ipvs"

    def __init__(
        self,
        service_cidr: str,
        cluster_cidr: str | None = None,
        netns: str | None = None,
        scheduler: str = "rr",
    ) -> None:
        if scheduler not in SCHEDULERS:
            raise ValueError(
                f"unknown IPVS scheduler {scheduler!r} (known: {', '.join(SCHEDULERS)})"
            )
        check_available(netns)
        self.service_cidr, self.cluster_cidr = service_cidr, cluster_cidr
        self.netns, self.scheduler = netns, scheduler
        self.state: dict[str, ServicePort] = {}
        self._ready = False
        self.draining: dict[Where, float] = {}  # removed TCP endpoint → monotonic start

    def _ipr(self) -> IPRoute:
        return NetNS(self.netns) if self.netns else IPRoute()

    def _prepare(self) -> None:
        """Once: sysctls, the dummy device, the constant chains and their jumps."""
        for key, value in SYSCTLS.items():
            run(["sysctl", "-q", "-w", f"{key}={value}"], netns=self.netns, check=False)
        with self._ipr() as ipr:
            if not ipr.link_lookup(ifname=DUMMY):
                ipr.link("add", ifname=DUMMY, kind="dummy")
        run(["ipset", "restore", "-exist"], netns=self.netns, input=ipset_document([]))
        run(
            [RESTORE, "--noflush", "-w"],
            netns=self.netns,
            input=iptables_document(self.cluster_cidr),
        )
        for table, chain, target in JUMPS:
            check = [IPTABLES, "-w", "-t", table, "-C", chain, "-j", target]
            if run(check, netns=self.netns, check=False).returncode != 0:
                run([IPTABLES, "-w", "-t", table, "-I", chain, "1", "-j", target], netns=self.netns)
        self._ready = True

    def node_ips(self) -> list[str]:
        """Addresses NodePorts listen on: every IPv4 address of the node but
        loopback and the ClusterIPs on kube-ipvs0 (kube-proxy's default)."""
        with self._ipr() as ipr:
            dummy = set(ipr.link_lookup(ifname=DUMMY))
            return sorted(
                a.get_attr("IFA_ADDRESS")
                for a in ipr.get_addr(family=2)
                if a["index"] not in dummy and not a.get_attr("IFA_ADDRESS").startswith("127.")
            )

    def _addresses(self, services: Iterable[ServicePort]) -> None:
        """kube-ipvs0 holds exactly the ClusterIPs (added and removed as needed)."""
        want = {s.cluster_ip for s in services}
        with self._ipr() as ipr:
            index = ipr.link_lookup(ifname=DUMMY)[0]
            have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
            for ip in sorted(have - want):
                ipr.addr("del", index=index, address=ip, prefixlen=32)
            for ip in sorted(want - have):
                ipr.addr("add", index=index, address=ip, prefixlen=32)

    def _ipvs(self, services: list[ServicePort]) -> None:
        have = parse_saved(run(["ipvsadm", "-Sn"], netns=self.netns, timeout=120).stdout)
        want = desired(services, self.node_ips(), self.scheduler)
        lines = restore_commands(have, want, self._drain(have, want))
        if lines:
            run(["ipvsadm", "-R"], netns=self.netns, timeout=600, input="\n".join(lines) + "\n")

    def _drain(
        self,
        have: tuple[set[VirtualServer], set[RealServer]],
        want: tuple[set[VirtualServer], set[RealServer]],
    ) -> frozenset[Where]:
        """Removed TCP real servers that keep weight 0 this pass: those IPVS still
        counts connections to, for at most DRAIN_MAX_S (the periodic full sync
        comes back for them)."""
        live = {(v.proto, v.addr) for v in want[0]}
        kept = {r.key for r in want[1]}
        removed = {r.key for r in have[1] if r.proto == "tcp" and (r.proto, r.vaddr) in live}
        removed -= kept
        now = time.monotonic()
        self.draining = {w: self.draining.get(w, now) for w in removed}
        fresh = {w for w, t0 in self.draining.items() if now - t0 < DRAIN_MAX_S}
        if not fresh:
            return frozenset()
        conns = parse_connections(run(["ipvsadm", "-Ln"], netns=self.netns, timeout=120).stdout)
        return frozenset(w for w in fresh if conns.get(w, 0) > 0)

    def full_sync(self, services: Iterable[ServicePort]) -> None:
        svcs = {s.ident: s for s in services}
        if not self._ready:
            self._prepare()
        local_service_route(self.service_cidr, self.netns)  # DNS binds its ClusterIP
        ordered = [svcs[k] for k in sorted(svcs)]
        self._addresses(ordered)
        run(["ipset", "restore"], netns=self.netns, timeout=300, input=ipset_document(ordered))
        self._ipvs(ordered)
        self.state = svcs

    def update(self, services: Iterable[ServicePort]) -> None:
        svcs = {s.ident: s for s in services}
        if svcs != self.state:
            self.full_sync(svcs.values())  # a diff already: only changes reach the kernel

    def apply(self, changes: PortChanges) -> None:
        """One pass's changes: the whole table is diffed against the kernel's (the
        restore documents compare every virtual server), so a change syncs it all."""
        if any(self.state.get(k) != changes.changed.get(k) for k in changes.idents()):
            self.full_sync(changes.current.values())

    def close(self) -> None:
        for table, chain, target in JUMPS:
            run(
                [IPTABLES, "-w", "-t", table, "-D", chain, "-j", target],
                netns=self.netns,
                check=False,
            )
        for table, chains in (
            ("nat", ("PODLAB-IPVS-SVC", "PODLAB-IPVS-NP", "PODLAB-IPVS-MASQ", "PODLAB-IPVS-POST")),
            ("filter", ("PODLAB-IPVS-FILTER",)),
        ):
            for c in chains:
                run([IPTABLES, "-w", "-t", table, "-F", c], netns=self.netns, check=False)
                run([IPTABLES, "-w", "-t", table, "-X", c], netns=self.netns, check=False)
        have = parse_saved(run(["ipvsadm", "-Sn"], netns=self.netns, check=False).stdout)
        lines = restore_commands(have, (set(), set()))
        if lines:
            run(["ipvsadm", "-R"], netns=self.netns, input="\n".join(lines) + "\n", check=False)
        for name in SETS:
            run(["ipset", "destroy", name], netns=self.netns, check=False)
        with self._ipr() as ipr:
            for index in ipr.link_lookup(ifname=DUMMY):
                ipr.link("del", index=index)
        local_service_route(self.service_cidr, self.netns, remove=True)
        self.state, self._ready = {}, False
