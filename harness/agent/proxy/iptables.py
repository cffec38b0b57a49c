"""The ``iptables`` proxy mode: kube-proxy's classic chain layout, for comparison.

Kernel objects (iptables-legacy, tables ``nat`` and ``filter`` of the node's
namespace), all in chains of ours:

- ``nat``: ``KUBE-SERVICES`` (jumped from PREROUTING and OUTPUT) with one rule
  per service port ``-d IP -p tcp --dport P -j KUBE-SVC-<id>`` — a linear scan,
  the scaling problem nftables' verdict maps remove; ``KUBE-NODEPORTS`` for
  local destinations; ``KUBE-SVC-<id>`` picks an endpoint with
  ``-m statistic --mode random --probability 1/(n-i)``; ``KUBE-SEP-<id>``
  marks hairpin traffic and DNATs; ClientIP affinity with ``-m recent``;
  ``KUBE-POSTROUTING`` masquerades marked packets.
- ``filter``: ``KUBE-SERVICES`` (from INPUT, FORWARD, OUTPUT) rejects service
  ports that have no ready endpoint (``icmp-port-unreachable`` → ECONNREFUSED).

Applied with ``iptables-legacy-restore --noflush``: only our chains are
declared (and so flushed), the built-in chains keep everything else. An
endpoint change rewrites only that service's SVC/SEP chains; any other change
(a Service added, removed, re-addressed, gaining or losing all endpoints)
rewrites the top-level chains (one or two rules per service port) and the
changed services' own chains, leaving every other SVC/SEP chain as it is —
kube-proxy's ``MinimizeIPTablesRestore`` partial sync. The periodic
``full_sync`` rewrites everything, repairing drift.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from harness.agent.proxy.base import PortChanges, changes_between, local_service_route
from harness.agent.proxy.model import MASQ_MARK, Endpoint, ServicePort
from harness.exec import run

IPTABLES = "iptables-legacy"
RESTORE = "iptables-legacy-restore"
PREFIXES = ("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-")
JUMPS = [
    ("nat", "PREROUTING", "KUBE-SERVICES"),
    ("nat", "OUTPUT", "KUBE-SERVICES"),
    ("nat", "POSTROUTING", "KUBE-POSTROUTING"),
    ("filter", "INPUT", "KUBE-SERVICES"),
    ("filter", "FORWARD", "KUBE-SERVICES"),
    ("filter", "OUTPUT", "KUBE-SERVICES"),
]


def _svc(s: ServicePort) -> str:
    return f"KUBE-SVC-{s.chain_id()}"


def _ext(s: ServicePort) -> str:
    return f"KUBE-EXT-{s.chain_id()}"


def _sep(s: ServicePort, ep: Endpoint) -> str:
    digest = hashlib.sha256(f"{s.ident}>{ep.ip}:{ep.port}".encode()).hexdigest()
    return f"KUBE-SEP-{digest[:16].upper()}"


def chains_of(s: ServicePort) -> list[str]:
    """The per-service chains ``s`` needs (none when it has no endpoints)."""
    if not s.endpoints:
        return []
    out = [_svc(s), *(_sep(s, ep) for ep in s.unique)]
    return out + ([_ext(s)] if s.node_port else [])


def _match(s: ServicePort) -> str:
    return f"-d {s.cluster_ip}/32 -p {s.protocol} -m {s.protocol} --dport {s.port}"


def service_rules(s: ServicePort, cluster_cidr: str | None) -> list[str]:
    """Rules of one service port's own chains (SVC, SEPs, EXT)."""
    svc, n = _svc(s), len(s.endpoints)
    lines = []
    if cluster_cidr:
        lines.append(f"-A {svc} ! -s {cluster_cidr} -j KUBE-MARK-MASQ")
    if s.node_port:
        lines += [f"-A {_ext(s)} -j KUBE-MARK-MASQ", f"-A {_ext(s)} -j {svc}"]
    recent = "-m recent --mask 255.255.255.255 --rsource"
    for ep in s.unique if s.affinity_s else ():
        sep = _sep(s, ep)
        lines.append(
            f"-A {svc} {recent} --name {sep} --rcheck --seconds {s.affinity_s} --reap -j {sep}"
        )
    for i, ep in enumerate(s.endpoints):  # a repeated endpoint: one jump per share
        left = n - i
        stat = f"-m statistic --mode random --probability {1 / left:.11f} " if left > 1 else ""
        lines.append(f"-A {svc} {stat}-j {_sep(s, ep)}")
    for ep in s.unique:
        sep = _sep(s, ep)
        lines.append(f"-A {sep} -s {ep.ip}/32 -j KUBE-MARK-MASQ")
        if s.affinity_s:
            lines.append(f"-A {sep} {recent} --name {sep} --set")
        lines.append(
            f"-A {sep} -p {s.protocol} -m {s.protocol} -j DNAT --to-destination {ep.ip}:{ep.port}"
        )
    return lines


def _top_rules(svcs: list[ServicePort]) -> tuple[list[str], list[str]]:
    """The rules of ``nat`` KUBE-SERVICES and KUBE-NODEPORTS and of ``filter``
    KUBE-SERVICES: one or two per service port, in ``svcs``' order."""
    nat: list[str] = []
    filt: list[str] = []
    for s in svcs:
        if s.endpoints:
            nat.append(f"-A KUBE-SERVICES {_match(s)} -j {_svc(s)}")
            if s.node_port:
                port = f"-p {s.protocol} -m {s.protocol} --dport {s.node_port}"
                nat.append(f"-A KUBE-NODEPORTS {port} -j {_ext(s)}")
        else:
            # TCP gets a reset: ICMP errors are rate-limited per client (about 6, then
            # 1/s), so a client retrying quickly would otherwise wait for a timeout
            how = "tcp-reset" if s.protocol == "tcp" else "icmp-port-unreachable"
            reject = f"-j REJECT --reject-with {how}"
            filt.append(f"-A KUBE-SERVICES {_match(s)} {reject}")
            if s.node_port:
                filt.append(
                    f"-A KUBE-SERVICES -m addrtype --dst-type LOCAL -p {s.protocol} "
                    f"-m {s.protocol} --dport {s.node_port} {reject}"
                )
    nat.append("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    return nat, filt


def _document(
    svcs: list[ServicePort],
    rewrite: list[ServicePort],
    stale: Iterable[str],
    cluster_cidr: str | None,
    full: bool,
) -> str:
    """Top-level chains in full, the chains of ``rewrite`` declared and filled, the
    ``stale`` chains that no service of ``svcs`` wants flushed and deleted; ``full``:
    the masquerade chains too."""
    wanted = {c for s in svcs for c in chains_of(s)}
    own = [c for s in rewrite for c in chains_of(s)]
    gone = sorted(set(stale) - wanted)
    mine = [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        *(("KUBE-POSTROUTING", "KUBE-MARK-MASQ") if full else ()),
    ]
    nat = ["*nat", *(f":{c} - [0:0]" for c in [*mine, *own, *gone])]
    if full:
        mark = f"{MASQ_MARK:#x}"
        nat += [
            f"-A KUBE-MARK-MASQ -j MARK --or-mark {mark}",
            f"-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN",
            f"-A KUBE-POSTROUTING -j MARK --xor-mark {mark}",
            "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
        ]
    top_nat, top_filt = _top_rules(svcs)
    nat += top_nat
    nat += [line for s in rewrite if s.endpoints for line in service_rules(s, cluster_cidr)]
    nat += [f"-X {c}" for c in gone]
    filt = ["*filter", ":KUBE-SERVICES - [0:0]", *top_filt]
    return "\n".join([*nat, "COMMIT", *filt, "COMMIT"]) + "\n"


def full_document(
    services: Iterable[ServicePort], cluster_cidr: str | None, stale: Iterable[str] = ()
) -> str:
    """Every chain of ours rewritten; ``stale`` chains (left from before) deleted."""
    svcs = sorted(services, key=lambda s: s.ident)
    return _document(svcs, svcs, stale, cluster_cidr, full=True)


def services_document(
    old: dict[str, ServicePort], new: dict[str, ServicePort], cluster_cidr: str | None
) -> str:
    """The partial sync for changes that touch the top-level chains: those in full
    (cheap: a rule or two per service port), the chains of the changed services, the
    chains they no longer need deleted; every unchanged service's chains untouched."""
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    rewrite = [new[k] for k in changed if k in new]
    stale = [c for k in changed if k in old for c in chains_of(old[k])]
    svcs = sorted(new.values(), key=lambda s: s.ident)
    return _document(svcs, rewrite, stale, cluster_cidr, full=False)


def endpoints_document(
    changes: list[tuple[ServicePort, ServicePort]], cluster_cidr: str | None
) -> str | None:
    """Rewrite only the changed service ports' chains, in one ``*nat`` section.

    Possible when just endpoints moved; None when any change touches
    KUBE-SERVICES (address, port, node port, a service gaining or losing all
    endpoints): that needs the full document. One section = one COMMIT: legacy
    iptables replaces the whole table blob per COMMIT, so sections must not
    multiply with the number of services changed.
    """
    decl: list[str] = []
    rules: list[str] = []
    drops: list[str] = []
    for old, new in changes:
        same = (old.cluster_ip, old.port, old.protocol, old.node_port)
        if same != (new.cluster_ip, new.port, new.protocol, new.node_port):
            return None
        if not old.endpoints or not new.endpoints:
            return None
        keep = chains_of(new)
        drop = [c for c in chains_of(old) if c not in keep]
        decl += [f":{c} - [0:0]" for c in [*keep, *drop]]
        rules += service_rules(new, cluster_cidr)
        drops += [f"-X {c}" for c in drop]
    if not decl:
        return None
    return "\n".join(["*nat", *decl, *rules, *drops, "COMMIT"]) + "\n"


class IptablesProxy:
    """The applier: jumps from built-in chains ensured once, our chains restored."""

    name = "iptables"

    def __init__(
        self, service_cidr: str, cluster_cidr: str | None = None, netns: str | None = None
    ) -> None:
        self.service_cidr = service_cidr
        self.cluster_cidr = cluster_cidr
        self.netns = netns
        self.state: dict[str, ServicePort] = {}

    def _restore(self, doc: str) -> None:
        run([RESTORE, "--noflush", "-w"], timeout=300, netns=self.netns, input=doc)

    def _ensure_jumps(self) -> None:
        for table, chain, target in JUMPS:
            check = [IPTABLES, "-w", "-t", table, "-C", chain, "-j", target]
            if run(check, netns=self.netns, check=False).returncode != 0:
                run([IPTABLES, "-w", "-t", table, "-I", chain, "1", "-j", target], netns=self.netns)

    def existing_chains(self) -> set[str]:
        out = run([IPTABLES, "-w", "-t", "nat", "-S"], netns=self.netns).stdout
        return {
            line.split()[1]
            for line in out.splitlines()
            if line.startswith("-N ") and line.split()[1].startswith(PREFIXES)
        }

    def full_sync(self, services: Iterable[ServicePort]) -> None:
        svcs = {s.ident: s for s in services}
        local_service_route(self.service_cidr, self.netns)
        self._restore(full_document(svcs.values(), self.cluster_cidr, self.existing_chains()))
        self._ensure_jumps()
        self.state = svcs

    def update(self, services: Iterable[ServicePort]) -> None:
        """Program the difference from the whole list ``services`` (tests, tools)."""
        self.apply(changes_between(self.state, services))

    def apply(self, changes: PortChanges) -> None:
        """One pass's changes: only endpoints moved → their services' chains; a port
        added, removed or re-addressed → the partial sync (top-level chains whole)."""
        changed = [k for k in changes.idents() if self.state.get(k) != changes.changed.get(k)]
        if not changed:
            return
        pairs = [
            (self.state[k], changes.changed[k])
            for k in changed
            if k in self.state and k in changes.changed
        ]
        doc = endpoints_document(pairs, self.cluster_cidr) if len(pairs) == len(changed) else None
        if doc is not None:
            self._restore(doc)
            for _, new in pairs:
                self.state[new.ident] = new
            return
        svcs = dict(self.state)  # KUBE-SERVICES changes too: the partial sync (every jump)
        for k in changed:
            if k in changes.changed:
                svcs[k] = changes.changed[k]
            else:
                svcs.pop(k, None)
        self._restore(services_document(self.state, svcs, self.cluster_cidr))
        self.state = svcs

    def close(self) -> None:
        for table, chain, target in JUMPS:
            run(
                [IPTABLES, "-w", "-t", table, "-D", chain, "-j", target],
                netns=self.netns,
                check=False,
            )
        self._restore(full_document([], None, self.existing_chains()))
        chains = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
        for table, names in (("nat", chains), ("filter", ("KUBE-SERVICES",))):
            for c in names:
                run([IPTABLES, "-w", "-t", table, "-F", c], netns=self.netns, check=False)
                run([IPTABLES, "-w", "-t", table, "-X", c], netns=self.netns, check=False)
        local_service_route(self.service_cidr, self.netns, remove=True)
        self.state = {}
