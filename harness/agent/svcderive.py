"""What one node programs for services, DNS and policy — recomputed only where dirty.

The second half of Felix's pattern (``svcindex`` records and marks): once per
pass, ``Derived.update`` takes the ``Dirt`` gathered since the last pass and

1. re-resolves the MCS exports if any export or Service changed (cheap: one
   entry per export), which dirties the names whose import changed;
2. recomputes every dirty service name with ``mesh.desired.derive_ref`` over
   *narrow* views (``ClusterIndex.narrow``: that name's Service in each
   cluster and the pods it selects), caching the result per name; its DNS part
   (``dns.Zone.service``) too;
3. re-makes the ``pod.cluster.local`` record of each local pod whose address
   moved;
4. rebuilds the policy table only when policy inputs moved;
5. replaces the recomputed names' ports in the table of every port it keeps by
   ident, and hands the pass's difference on (``PortChanges``: the changed
   ports, the removed idents — what the proxy and the conntrack sweeper
   program, as kube-proxy's change tracker; at 5,000 Services re-assembling
   every name's ports into a list was 36–83 ms of a one-name pass, load ~16),
   and the zone by replacing only the changed parts' names in the merged table
   (``ZoneParts``: at 5,000 Services a re-merge of every part took 0.2 s of a
   0.66 s one-Service pass, cProfile, load 11). ``Outcome.mesh`` / ``ports``
   assemble everything (``desired.assemble``) on demand, for tests and tools.

Everything dirty (a node died or came back, a remote node moved, data-path
reachability changed, the periodic full sync) recomputes every name, which is
exactly the old whole-snapshot computation. The result equals
``desired.compute`` over the whole cache — tests/unit/test_svc_incremental.py
checks that over random event sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from harness.agent import policy
from harness.agent.dns import Zone
from harness.agent.liveness import not_ready
from harness.agent.mesh import desired as mesh
from harness.agent.mesh import mcs
from harness.agent.mesh.views import ClusterView
from harness.agent.proxy.base import PortChanges
from harness.agent.proxy.model import ServicePort
from harness.agent.svcindex import Dirt, Ref, ServicesIndex

Obj = dict[str, Any]


@dataclass
class Outcome:
    """One pass's result: what to program, and what it took."""

    changes: PortChanges  # the service ports this pass changed (``current``: all of them)
    zone: Zone
    table: str
    imports: dict[Ref, mcs.Import]
    conditions: dict[tuple[str, str, str], tuple[mcs.Condition, ...]]
    targets: dict[tuple[str, str], str]  # remote nodes to probe
    names: int = 0  # service names recomputed this pass
    zone_changed: bool = False
    policy_changed: bool = False
    # global service ports that changed how they pick backends: (ident, was, now)
    state_moves: list[tuple[str, str, str]] = field(default_factory=list)
    services: Mapping[Ref, Obj] = field(default_factory=dict, repr=False)
    results: Mapping[Ref, mesh.RefResult] = field(default_factory=dict, repr=False)
    hidden_ip: str | None = None

    @property
    def mesh(self) -> mesh.MeshDesired:
        """Everything as ``desired.compute`` gives it (every port, the ClusterSet records):
        assembled from every name's part, O(Services) — for tests and tools, not the pass.
        It reads the live cache: ask before the next ``update``."""
        out = mesh.MeshDesired(imports=self.imports, conditions=self.conditions)
        return mesh.assemble(out, self.services, self.results)

    @property
    def ports(self) -> list[ServicePort]:
        """Every port to program, in ``desired.assemble`` order (O(Services), as ``mesh``)."""
        return [g.port for g in self.mesh.ports if g.port.cluster_ip != self.hidden_ip]


@dataclass
class Derived:
    """The cached per-name results and the last assembled outputs of one node."""

    cluster: str
    node: str
    dns: bool = True
    hidden_ip: str | None = None  # ports at this ClusterIP are not programmed (own DNS)
    results: dict[Ref, mesh.RefResult] = field(default_factory=dict)
    # the zone's parts: (0, pod) each local pod's record, (1, ref) each local Service's,
    # (2, ref) each import's ClusterSet record — merged in that order, as Zone.merged
    parts: ZoneParts = field(default_factory=lambda: ZoneParts())
    imports: dict[Ref, mcs.Import] = field(default_factory=dict)
    conditions: dict[tuple[str, str, str], tuple[mcs.Condition, ...]] = field(default_factory=dict)
    table: str = ""
    unreachable: frozenset[tuple[str, str]] = frozenset()
    # every port to program by ident, kept per recomputed name (never re-assembled from
    # every name's part: at 5,000 Services that list was most of a one-name pass's
    # deriving), the idents each name contributes, global ports' non-local states, and
    # the remote nodes to probe (re-unioned only when a recomputed name has any)
    ports: dict[str, ServicePort] = field(default_factory=dict)
    by_ref: dict[Ref, tuple[str, ...]] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    targets: dict[tuple[str, str], str] = field(default_factory=dict)
    _zone: Zone = field(default_factory=Zone)

    def update(
        self,
        index: ServicesIndex,
        dirt: Dirt,
        dead: Callable[[str], bool],
        unreachable: Set[tuple[str, str]] = frozenset(),
    ) -> Outcome:
        """Recompute what ``dirt`` says moved; ``dead(node)``: a local node whose pods
        count as NotReady (its lifecycle verdict, fixed for this pass)."""
        if frozenset(unreachable) != self.unreachable:
            self.unreachable = frozenset(unreachable)
            dirt.everything = True
        refs = set(dirt.refs)
        if dirt.everything:
            refs |= set(self.results) | set(index.local.services) | set(self.imports)
            dirt.exports = dirt.policy = True
            self.parts = ZoneParts()
            dirt.pod_dns = {(ns, n) for ns, by in index.local.pods.items() for n in by}
        if dirt.exports:
            refs |= self._resolve(index)
        touched: dict[str, ServicePort | None] = {}  # each ident moved: its port before
        moves: list[tuple[str, str, str]] = []
        targets_moved = False
        for ref in refs:
            old = self.results.get(ref)
            self._derive(index, ref, dead)
            new = self.results.get(ref)
            targets_moved |= bool((old is not None and old.targets) or (new and new.targets))
            self._port_moves(ref, new, touched, moves)
        if targets_moved:
            self.targets = {}
            for r in self.results.values():
                self.targets.update(r.targets)
        zone_changed = bool(refs or dirt.pod_dns)
        if dirt.pod_dns:
            self._pod_records(index, dirt.pod_dns)
        if zone_changed:
            self._assemble_zone(refs)
        policy_changed = False
        if dirt.policy:
            table = self._policy(index)
            policy_changed, self.table = table != self.table, table
        changed = {
            k: p for k, was in touched.items() if (p := self.ports.get(k)) is not None and p != was
        }
        removed = frozenset(
            k for k, was in touched.items() if was is not None and k not in self.ports
        )
        previous = {k: was for k in (*changed, *removed) if (was := touched[k]) is not None}
        return Outcome(
            PortChanges(changed, removed, previous, self.ports), self._zone, self.table,
            self.imports, self.conditions, self.targets, len(refs), zone_changed,
            policy_changed, moves, index.local.services, self.results, self.hidden_ip,
        )  # fmt: skip

    def _port_moves(
        self,
        ref: Ref,
        r: mesh.RefResult | None,
        touched: dict[str, ServicePort | None],
        moves: list[tuple[str, str, str]],
    ) -> None:
        """Replace the ports (and global states) name ``ref`` contributes with ``r``'s,
        noting each ident's port from before the pass in ``touched`` and the global
        ports whose non-local state changed in ``moves``."""
        olds = self.by_ref.pop(ref, ())
        was_state = {k: self.states.pop(k) for k in olds if k in self.states}
        for k in olds:
            was = self.ports.pop(k, None)
            touched.setdefault(k, was)
        ids = []
        for g in [] if r is None else [*r.ports, *r.import_ports]:
            k = g.port.ident
            ids.append(k)
            if g.state != "local":
                if was_state.get(k, g.state) != g.state:
                    moves.append((k, was_state[k], g.state))
                self.states[k] = g.state
            if g.port.cluster_ip != self.hidden_ip:
                touched.setdefault(k, self.ports.get(k))
                self.ports[k] = g.port
        if ids:
            self.by_ref[ref] = tuple(ids)

    def _resolve(self, index: ServicesIndex) -> set[Ref]:
        """Re-resolve every export of the mesh; the names whose import changed."""
        views = [
            ClusterView(c.name, services=c.services, exports=c.exports)
            for c in (index.local, *index.remote_list())
        ]
        imports, self.conditions = mcs.resolve(mcs.exports_of(views[0], views[1:]))
        old = self.imports
        moved = {r for r in imports.keys() | old.keys() if imports.get(r) != old.get(r)}
        self.imports = imports
        return moved

    def _derive(self, index: ServicesIndex, ref: Ref, dead: Callable[[str], bool]) -> None:
        local = index.local.narrow(ref)
        imp = self.imports.get(ref)
        if not local.services and imp is None:
            self.results.pop(ref, None)
            self.parts.set((1, ref), None)
            return
        served = _served(local, dead)
        remotes = [c.narrow(ref) for c in index.remote_list()]
        ip = mesh.stored_ip(index.imports.get(ref))
        r = mesh.derive_ref(ref, local, remotes, imp, ip, served, self.unreachable)
        self.results[ref] = r
        svc = local.services.get(ref)
        if self.dns and svc is not None:
            self.parts.set((1, ref), Zone.service(svc, local.pods, served, r.remote_ready))
        else:
            self.parts.set((1, ref), None)

    def _pod_records(self, index: ServicesIndex, pods: set[Ref]) -> None:
        for ref in pods:
            ip = (index.local.statuses.get(ref) or {}).get("podIP")
            if index.local.pod(ref) is None or not ip or not self.dns:
                self.parts.set((0, ref), None)
            else:
                self.parts.set((0, ref), Zone.pod(ref[0], str(ip)))

    def _assemble_zone(self, refs: Set[Ref]) -> None:
        if not self.dns:
            self._zone = Zone()
            return
        for ref in refs:  # the recomputed names' ClusterSet records (imports moved: in refs)
            r = self.results.get(ref)
            part = None
            if ref in self.imports and r is not None and r.clusterset is not None:
                part = Zone()
                part.add_clusterset(*r.clusterset)
            self.parts.set((2, ref), part)
        self._zone = self.parts.zone()

    def _policy(self, index: ServicesIndex) -> str:
        """This node's whole policy table (policies are few; pods only matter if any)."""
        ns_labels = {
            ns: (o.get("metadata") or {}).get("labels", {}) for ns, o in index.namespaces.items()
        }
        policies = list(index.policies.values())
        local = index.local.view()
        mine = {
            (p["metadata"].get("namespace", "default"), p["metadata"]["name"])
            for p in local.pods
            if p.get("spec", {}).get("nodeName") == self.node
        }
        if not policies:
            return policy.ruleset([], [], ns_labels, mine)
        infos = policy.pods_from_store(local.pods, local.statuses, self.cluster)
        for c in index.remote_list():  # remote pods are policy peers (mirrored)
            view = c.view()
            infos += policy.remote_pods(view.name, view.pods, view.statuses)
        return policy.ruleset(policies, infos, ns_labels, mine)


class ZoneParts:
    """Zone parts by key, merged as ``Zone.merged`` of the parts in key order would be;
    a change re-merges only the names of the parts that changed. ``zone()`` hands out a
    new table each time (the DNS thread keeps reading the old one), never modified."""

    def __init__(self) -> None:
        self.parts: dict[Any, Zone] = {}
        self.owners: dict[str, set[Any]] = {}  # name → keys of the parts that hold it
        # name → how many of those hold records for it (the others: an empty non-terminal,
        # e.g. the namespace's ``<ns>.svc.cluster.local`` in every Service's part)
        self.holding: dict[str, int] = {}
        self.touched: set[str] = set()
        self._zone = Zone(records={})

    def set(self, key: Any, part: Zone | None) -> None:
        old = self.parts.pop(key, None)
        if old is not None:
            for name, rrs in old.records.items():
                self.owners[name].discard(key)
                self.holding[name] -= bool(rrs)
            self.touched.update(old.records)
        if part is not None:
            self.parts[key] = part
            for name, rrs in part.records.items():
                self.owners.setdefault(name, set()).add(key)
                self.holding[name] = self.holding.get(name, 0) + bool(rrs)
            self.touched.update(part.records)

    def zone(self) -> Zone:
        if not self.touched:
            return self._zone
        records = dict(self._zone.records)
        for name in self.touched:
            keys = self.owners.get(name)
            if not keys:
                records.pop(name, None)
                self.owners.pop(name, None)
                self.holding.pop(name, None)
                continue
            if not self.holding[name]:
                records[name] = []
            elif len(keys) == 1:
                (key,) = keys
                records[name] = list(self.parts[key].records[name])
            else:
                records[name] = [rr for k in sorted(keys) for rr in self.parts[k].records[name]]
        self.touched = set()
        self._zone = Zone(records=records)
        return self._zone


def _served(local: ClusterView, dead: Callable[[str], bool]) -> dict[Ref, Obj]:
    """The local statuses with the pods of dead nodes NotReady (for endpoints and DNS)."""
    served = local.statuses
    for p in local.pods:
        node = p.get("spec", {}).get("nodeName")
        ref = (p["metadata"].get("namespace", "default"), p["metadata"]["name"])
        if node and ref in served and dead(node):
            if served is local.statuses:
                served = dict(served)
            served[ref] = not_ready(served[ref])
    return served
