"""The ``nftables`` proxy mode: kube-proxy's nftables design in one table of ours.

Kernel objects, all in table ``ip podlab-proxy`` of the node's namespace:

- verdict maps ``service-ips`` (``ip daddr . meta l4proto . th dport`` →
  ``goto svc-…``) and ``service-nodeports`` (``meta l4proto . th dport``): one
  hash lookup per packet however many services exist;
- ``no-endpoint-services`` / ``no-endpoint-nodeports`` → ``reject-chain`` (TCP
  reset, ICMP port-unreachable), looked up from the NAT chains ``nat-prerouting``
  and ``nat-output`` right after the DNAT maps, so a service without ready
  endpoints refuses at once instead of timing out. The kernel runs NAT chains
  only for the first packet of a connection (what kube-proxy's filter chains
  select with ``ct state new``) and allows ``reject`` in prerouting since
  Linux 5.9, so the table has NO filter base chain: established packets, and
  the untracked outer packets of a tunnel, pass none of this table's chains
  (kube-proxy's layout, three filter chains on input/forward/output, cost every
  packet of the node one to two chain passes; docs/throughput.md, item 8);
- ``endpoints`` (``ip daddr . meta l4proto . th dport . numgen random mod N``
  → ``ip daddr . th dport``) and ``nodeport-endpoints``: every endpoint of
  every service is one map element; the shared chains ``lb-<N>`` /
  ``nplb-<N>`` (one per endpoint count N in use) hold the only DNAT rules.
  No chain or rule per service: a 10,000-service sync is a few maps of
  elements, and an endpoint change is element deletes and adds;
- services with ClientIP affinity use kube-proxy's layout instead:
  ``svc-<id>`` (``ip saddr @aff-<ep>`` lookups, then ``numgen random mod N
  vmap``), ``ext-<id>`` for NodePort, per endpoint ``sep-<id>`` (``update``
  of a dynamic timeout set, ``dnat``);
- ``hairpin`` (``ep . ep`` pairs): an endpoint reaching itself is masqueraded;
- ``nat-postrouting`` masquerades packets carrying ``MASQ_MARK`` (NodePort),
  hairpin pairs, and DNATed packets from outside the cluster CIDR.

The service CIDR is made local on the node (a ``local`` route in table
``local``, done by the applier) so an un-NATed packet to a ClusterIP reaches
the input hook — where ``reject`` is allowed — on nodes without a default
route. Documents are ``nft -f -`` scripts (one atomic transaction each): the
text form is about 3x smaller than JSON at 10,000 services and parses faster.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from harness.agent.proxy.base import (
    PortChanges,
    changes_between,
    local_service_route,
    move_counts,
    nft_script,
)
from harness.agent.proxy.model import MASQ_MARK, Endpoint, ServicePort
from harness.errors import ToolError

TABLE = "podlab-proxy"
T = f"ip {TABLE}"
#: a full ruleset holds ``lb-N``/``nplb-N`` for EVERY N from 1 to at least this (and up
#: to the power of two at or above the largest endpoint count in use): a rule that
#: looks up ``endpoints`` can only be added in the transaction that creates the map —
#: nft 1.0.6 cannot re-read the maps' ``typeof`` data from the kernel ("conflicting
#: protocols specified: tcp vs. th") — so an incremental update never adds one, and a
#: count beyond the chains made means a full sync (at most once per doubling)
LB_MIN = 64


@dataclass(frozen=True)
class NftConfig:
    """What the rules need to know about the cluster."""

    service_cidr: str
    cluster_cidr: str | None = None  # sources outside it are masqueraded (kube-proxy's rule)


def _sep(svc: ServicePort, ep: Endpoint) -> str:
    h = hashlib.sha256(f"{svc.ident}>{ep.ip}:{ep.port}".encode()).hexdigest()[:16]
    return f"sep-{h}"


def _key(svc: ServicePort) -> str:
    return f"{svc.cluster_ip} . {svc.protocol} . {svc.port}"


def _nodekey(svc: ServicePort) -> str:
    return f"{svc.protocol} . {svc.node_port}"


def skeleton(cfg: NftConfig) -> list[str]:
    """Table, maps and base chains: the part that does not depend on services."""
    concat = "ipv4_addr . inet_proto . inet_service"
    lines = [
        f"add table {T}",
        f"delete table {T}",
        f"add table {T}",
        f"add map {T} service-ips {{ type {concat} : verdict ; }}",
        f"add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; }}",
        f"add map {T} no-endpoint-services {{ type {concat} : verdict ; }}",
        f"add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; }}",
        f"add set {T} hairpin {{ type ipv4_addr . ipv4_addr ; }}",
        f"add map {T} endpoints {{ typeof ip daddr . meta l4proto . th dport . "
        "numgen random mod 1 : ip daddr . th dport ; }",
        f"add map {T} nodeport-endpoints {{ typeof meta l4proto . th dport . "
        "numgen random mod 1 : ip daddr . th dport ; }",
    ]
    hooks = [
        ("nat-prerouting", "nat", "prerouting", "dstnat"),
        ("nat-output", "nat", "output", "-100"),
        ("nat-postrouting", "nat", "postrouting", "srcnat"),
    ]
    for name, kind, hook, prio in hooks:
        lines.append(
            f"add chain {T} {name} {{ type {kind} hook {hook} priority {prio} ; policy accept ; }}"
        )
    for name in ("services", "endpoints-check", "reject-chain", "mark-for-masq"):
        lines.append(f"add chain {T} {name}")
    local = f"ip daddr != {cfg.service_cidr} fib daddr type local"
    lines += [
        f"add rule {T} nat-prerouting jump services",
        f"add rule {T} nat-prerouting jump endpoints-check",
        f"add rule {T} nat-output jump services",
        f"add rule {T} nat-output jump endpoints-check",
        f"add rule {T} nat-postrouting ip saddr . ip daddr @hairpin masquerade",
        *(
            [
                f"add rule {T} nat-postrouting ct status dnat ip saddr != {cfg.cluster_cidr} "
                "ip daddr != 127.0.0.0/8 masquerade"
            ]
            if cfg.cluster_cidr
            else []
        ),
        f"add rule {T} nat-postrouting meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} "
        f"meta mark set meta mark ^ {MASQ_MARK:#x} masquerade fully-random",
        f"add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {T} services {local} meta l4proto . th dport vmap @service-nodeports",
        f"add rule {T} endpoints-check ip daddr . meta l4proto . th dport "
        "vmap @no-endpoint-services",
        f"add rule {T} endpoints-check {local} meta l4proto . th dport vmap @no-endpoint-nodeports",
        f"add rule {T} reject-chain meta l4proto tcp reject with tcp reset",
        f"add rule {T} reject-chain reject",
        f"add rule {T} mark-for-masq meta mark set meta mark | {MASQ_MARK:#x}",
    ]
    return lines


def _affinity(svc: ServicePort) -> bool:
    return bool(svc.affinity_s and svc.endpoints)


def _chains(svc: ServicePort) -> list[str]:
    """Per-service chains: only ClientIP-affinity services have any (svc, ext, sep)."""
    if not _affinity(svc):
        return []
    cid = svc.chain_id()
    out = [f"svc-{cid}", *(_sep(svc, ep) for ep in svc.unique)]
    return out + ([f"ext-{cid}"] if svc.node_port else [])


def _sets(svc: ServicePort) -> list[str]:
    """Affinity sets (name → definition) of one service port."""
    if not _affinity(svc):
        return []
    spec = f"{{ type ipv4_addr ; flags dynamic,timeout ; timeout {svc.affinity_s}s ; }}"
    return [f"aff-{_sep(svc, ep)[4:]} {spec}" for ep in svc.unique]


def _affinity_rules(svc: ServicePort) -> list[str]:
    """Chains of an affinity service: remembered endpoint first, else a random one."""
    cid = svc.chain_id()
    chain = f"svc-{cid}"
    lines = []
    if svc.node_port:
        lines += [
            f"add rule {T} ext-{cid} jump mark-for-masq",
            f"add rule {T} ext-{cid} goto {chain}",
        ]
    for ep in svc.unique:
        lines.append(f"add rule {T} {chain} ip saddr @aff-{_sep(svc, ep)[4:]} goto {_sep(svc, ep)}")
    arms = ", ".join(f"{i} : goto {_sep(svc, ep)}" for i, ep in enumerate(svc.endpoints))
    lines.append(f"add rule {T} {chain} numgen random mod {len(svc.endpoints)} vmap {{ {arms} }}")
    for ep in svc.unique:
        sep = _sep(svc, ep)
        lines.append(f"add rule {T} {sep} update @aff-{sep[4:]} {{ ip saddr }}")
        lines.append(f"add rule {T} {sep} meta l4proto {svc.protocol} dnat to {ep.ip}:{ep.port}")
    return lines


def _lb_chains(n: int) -> list[str]:
    """Shared chains for every service with ``n`` endpoints: one DNAT per protocol.

    The endpoint is looked up in ``endpoints`` by (address, protocol, port,
    random index < n): no chain or rule per service, so programming cost and
    per-packet cost do not grow with the number of services.
    """
    lines = [f"add chain {T} lb-{n}", f"add chain {T} nplb-{n}"]
    lines.append(f"add rule {T} nplb-{n} jump mark-for-masq")
    for proto in ("tcp", "udp"):
        lines.append(
            f"add rule {T} lb-{n} meta l4proto {proto} dnat ip addr . port to "
            f"ip daddr . meta l4proto . th dport . numgen random mod {n} map @endpoints"
        )
        lines.append(
            f"add rule {T} nplb-{n} meta l4proto {proto} dnat ip addr . port to "
            f"meta l4proto . th dport . numgen random mod {n} map @nodeport-endpoints"
        )
    return lines


def _elements(svc: ServicePort, verb: str) -> list[str]:
    """Map elements of one service port (``verb`` add or delete)."""
    cid, n = svc.chain_id(), len(svc.endpoints)
    if not n:
        lines = [f"{verb} element {T} no-endpoint-services {{ {_key(svc)} : goto reject-chain }}"]
        if svc.node_port:
            item = f"{_nodekey(svc)} : goto reject-chain"
            lines.append(f"{verb} element {T} no-endpoint-nodeports {{ {item} }}")
        return lines
    aff = _affinity(svc)
    target = f"svc-{cid}" if aff else f"lb-{n}"
    lines = [f"{verb} element {T} service-ips {{ {_key(svc)} : goto {target} }}"]
    if not aff:
        for i, ep in enumerate(svc.endpoints):
            item = f"{_key(svc)} . {i} : {ep.ip} . {ep.port}"
            lines.append(f"{verb} element {T} endpoints {{ {item} }}")
    if svc.node_port:
        ext = f"ext-{cid}" if aff else f"nplb-{n}"
        lines.append(f"{verb} element {T} service-nodeports {{ {_nodekey(svc)} : goto {ext} }}")
        if not aff:
            for i, ep in enumerate(svc.endpoints):
                item = f"{_nodekey(svc)} . {i} : {ep.ip} . {ep.port}"
                lines.append(f"{verb} element {T} nodeport-endpoints {{ {item} }}")
    return lines


def _hairpin(services: Iterable[ServicePort]) -> set[str]:
    """Endpoint addresses: a packet from one of them to itself after DNAT is hairpin."""
    return {ep.ip for s in services for ep in s.endpoints}


def _hairpin_elements(ips: Iterable[str], verb: str) -> list[str]:
    ips = sorted(ips)
    if not ips:
        return []
    return [f"{verb} element {T} hairpin {{ {', '.join(f'{ip} . {ip}' for ip in ips)} }}"]


def _sizes(services: Iterable[ServicePort]) -> set[int]:
    return {len(s.endpoints) for s in services if s.endpoints and not _affinity(s)}


def lb_range(services: Iterable[ServicePort]) -> int:
    """The largest N whose ``lb-N`` chains a full ruleset of ``services`` makes (every N
    from 1 up to it): ``LB_MIN``, doubled until it covers the largest count in use."""
    top, k = max(_sizes(services), default=0), LB_MIN
    while k < top:
        k *= 2
    return k


def full_ruleset(services: Iterable[ServicePort], cfg: NftConfig) -> str:
    """One atomic document replacing the whole table with ``services``."""
    svcs = sorted(services, key=lambda s: s.ident)
    lines = skeleton(cfg)
    for n in range(1, lb_range(svcs) + 1):  # every count, used or not (LB_MIN)
        lines += _lb_chains(n)
    for svc in svcs:
        lines += [f"add chain {T} {c}" for c in _chains(svc)]
        lines += [f"add set {T} {st}" for st in _sets(svc)]
    for svc in svcs:
        if _affinity(svc):
            lines += _affinity_rules(svc)
    lines += _batched([e for svc in svcs for e in _elements(svc, "add")])
    lines += _hairpin_elements(_hairpin(svcs), "add")
    return "\n".join(lines) + "\n"


def _batched(element_lines: list[str]) -> list[str]:
    """``add element T m { a }`` × N → one command per map (nft parses it much faster)."""
    by_map: dict[str, list[str]] = {}
    for line in element_lines:
        head, _, body = line.partition(" { ")
        by_map.setdefault(head, []).append(body.removesuffix(" }"))
    return [f"{head} {{ {', '.join(items)} }}" for head, items in by_map.items()]


def slotted(old: ServicePort | None, new: ServicePort) -> ServicePort:
    """``new`` with its endpoint entries in the slots they had in ``old`` where they are
    still wanted, and the rest in the free slots: an endpoint change then rewrites
    only the ``endpoints`` map elements whose slot changed, not every element of the
    service (1,000 backends turning Ready 100 at a time: 100 adds per pass, not all).
    Slots stay dense (``numgen random mod N`` picks 0..N-1); weights (repeated
    entries) are kept as counts."""
    if old is None or not old.endpoints or _affinity(new) or len(new.endpoints) < 2:
        return new
    want = Counter(new.endpoints)
    slots: list[Endpoint | None] = [None] * len(new.endpoints)
    for i, ep in enumerate(old.endpoints[: len(slots)]):
        if want[ep] > 0:
            slots[i] = ep
            want[ep] -= 1
    rest = iter(sorted(want.elements()))
    return replace(new, endpoints=tuple(s if s is not None else next(rest) for s in slots))


def _chain_lines(gone: list[ServicePort], came: list[ServicePort]) -> tuple[list[str], list[str]]:
    """Affinity services' chains and sets: removed for ``gone``, made for ``came``."""
    drop = [f"flush chain {T} {c}" for s in gone for c in _chains(s)]
    drop += [f"delete chain {T} {c}" for s in gone for c in _chains(s)]
    drop += [f"delete set {T} {st.split()[0]}" for s in gone for st in _sets(s)]
    make = []
    for s in came:
        make += [f"add chain {T} {c}" for c in _chains(s)]
        make += [f"add set {T} {st}" for st in _sets(s)]
        if _affinity(s):
            make += _affinity_rules(s)
    return drop, make


def _moved(old: ServicePort | None, new: ServicePort | None) -> bool:
    """Whether a service port changed: the same object first (the services controller
    hands the unchanged ones back as they were), a field comparison only otherwise —
    at 5,000 ports the comparisons were 40 % of an update's Python."""
    return old is not new and old != new


def update_document(
    old: dict[str, ServicePort], new: dict[str, ServicePort], cfg: NftConfig, lb_max: int = 0
) -> str | None:
    """The incremental transaction from ``old`` to ``new`` (both keyed by ident), every
    port compared (the reference for ``diff_document``, which the applier runs on a
    pass's changes only).

    Only the changed service ports move: for plain ones, exactly the map elements
    that differ are deleted and added (``slotted`` keeps unchanged endpoints in
    their slots); an affinity service (either side) is removed and re-added
    whole, chains and sets included. Nothing else in the table moves. None when
    nothing changed. ``lb_max``: the ``lb-N`` chains the table already has for every
    N up to it (``full_ruleset``); only counts beyond get chains here.
    """
    changed = sorted(k for k in old.keys() | new.keys() if _moved(old.get(k), new.get(k)))
    if not changed:
        return None
    fresh = [new[k] for k in changed if k in new]
    sizes = {n for n in _sizes(fresh) - _sizes(old.values()) if n > lb_max}
    was_ips, now_ips = _hairpin(old.values()), _hairpin(new.values())
    pairs = [(old.get(k), new.get(k)) for k in changed]
    return diff_document(pairs, was_ips - now_ips, now_ips - was_ips, sizes)


def diff_document(
    pairs: list[tuple[ServicePort | None, ServicePort | None]],
    hairpin_gone: Iterable[str] = (),
    hairpin_came: Iterable[str] = (),
    lb_sizes: Iterable[int] = (),
) -> str:
    """The transaction moving each (old, new) pair of one ident (None: absent) — the
    changed ports only — plus the hairpin pairs of endpoint addresses no port uses
    any more / newly used, and ``lb-N`` chains for the counts ``lb_sizes``."""
    deletes: list[str] = []
    adds: list[str] = []
    gone, came = [], []
    for o, n in pairs:
        was = _elements(o, "add") if o is not None else []
        now = _elements(n, "add") if n is not None else []
        if any(s is not None and _affinity(s) for s in (o, n)):
            keep: set[str] = set()  # chains are rebuilt: every element goes and comes back
            gone += [o] if o is not None else []
            came += [n] if n is not None else []
        else:
            keep = set(was) & set(now)
        deletes += [e.replace("add", "delete", 1) for e in was if e not in keep]
        adds += [e for e in now if e not in keep]
    drop, make = _chain_lines(gone, came)
    lines = _batched(deletes) + drop
    for size in sorted(lb_sizes):
        lines += _lb_chains(size)
    lines += make + _batched(adds)
    lines += _hairpin_elements(hairpin_gone, "delete")
    lines += _hairpin_elements(hairpin_came, "add")
    return "\n".join(lines) + "\n"


def _ips(svc: ServicePort | None) -> set[str]:
    return set() if svc is None else {ep.ip for ep in svc.endpoints}


class NftablesProxy:
    """The applier: full sync replaces the table; a pass's changes move only their map
    elements (``apply``: work in the changed ports, not in every port)."""

    name = "nftables"

    def __init__(self, cfg: NftConfig, netns: str | None = None) -> None:
        self.cfg = cfg
        self.netns = netns
        self.state: dict[str, ServicePort] = {}  # as programmed (endpoints in slot order)
        self._given: dict[str, ServicePort] = {}  # as last given (the state's source)
        # endpoint address → how many programmed ports send to it: its hairpin pair is
        # in the table while the count is above 0 (kept per change, not summed per pass)
        self._users: Counter[str] = Counter()
        self.lb_max = 0  # lb-N chains exist for every N up to this (the last full sync's)

    def full_sync(self, services: Iterable[ServicePort]) -> None:
        """Replace everything (start, periodic drift repair, after a failed update)."""
        local_service_route(self.cfg.service_cidr, self.netns)
        svcs = {s.ident: s for s in services}
        nft_script(full_ruleset(svcs.values(), self.cfg), self.netns)
        self.state, self._given = svcs, dict(svcs)
        self._users = Counter(ip for s in svcs.values() for ip in _ips(s))
        self.lb_max = lb_range(svcs.values())

    def update(self, services: Iterable[ServicePort]) -> None:
        """Program the difference between the whole list ``services`` and what was last
        given (tests, tools; the services controller hands ``apply`` its changes)."""
        self.apply(changes_between(self._given, services))

    def apply(self, changes: PortChanges) -> None:
        """Program one pass's changes; a full sync of ``changes.current`` when a count
        needs ``lb-N`` chains the table lacks, or when nft refuses (our table changed)."""
        pairs: list[tuple[str, ServicePort | None, ServicePort | None]] = []
        for k in changes.idents():
            given = changes.changed.get(k)
            old = self.state.get(k)
            new = None if given is None else slotted(old, given)
            if _moved(old, new):
                pairs.append((k, old, new))
            if given is None:
                self._given.pop(k, None)
            else:
                self._given[k] = given
        if not pairs:
            return
        if max(_sizes(n for _, _, n in pairs if n is not None), default=0) > self.lb_max:
            self.full_sync(changes.current.values())  # a count without lb chains (LB_MIN)
            return
        came, left = move_counts(self._users, ((_ips(o), _ips(n)) for _, o, n in pairs))
        try:
            nft_script(diff_document([(o, n) for _, o, n in pairs], left, came), self.netns)
        except ToolError:
            self.full_sync(changes.current.values())  # someone changed our table: start over
            return
        for k, _, n in pairs:
            if n is None:
                self.state.pop(k, None)
            else:
                self.state[k] = n

    def close(self) -> None:
        nft_script(f"add table {T}\ndelete table {T}\n", self.netns)
        local_service_route(self.cfg.service_cidr, self.netns, remove=True)
        self.state, self._given, self._users = {}, {}, Counter()
