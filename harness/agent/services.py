"""Services, cluster DNS and NetworkPolicy on one node, fed by one etcd watch.

Felix's shape: watch events only *record* the new state in an index
(``svcindex``) and mark what they can affect — service names, the policy
table, the export resolution — and one worker thread then recomputes just that
(``svcderive``: the proxy's service ports, the DNS zone, this node's policy
table) and flushes each once. A change after a quiet spell is programmed at
once (no delay before the pass: every wait is one more wake-up on a loaded
node); what arrives during a pass — the rest of a burst, a Deployment's worth
of pods — is gathered into the next one (``MIN_GAP_S`` after it), so a burst
costs a pass or two, every pass sees a consistent snapshot, and a pass costs
the work of the services that changed, not of every service times every pod.
A node dying or coming back dirties only the Services selecting its pods. A
periodic full sync (``resync_s``) repairs drift from what was derived: the
proxy rebuilds its table, the policy table is re-applied; everything is
recomputed from the index only when nothing can be trusted — the first pass,
a re-listing (a restart, a compacted watch), a failed pass — and every
``recompute_s`` for safety (a full recompute at 1,000 Services took 5–26 s on
a starved node, and every change waits for it: kube-proxy and Felix likewise
resync the kernel from incrementally kept state, not from a recomputation).

Node failure: the agents' node records (``nodes/<name>``, rewritten every
heartbeat) are watched too, but only for liveness (``liveness.NodeLiveness``).
A node whose record is deleted or silent for ``node_grace_s`` is dead, and its
pods are treated as NotReady — Kubernetes' node lifecycle controller — so they
leave the service endpoints and headless DNS answers until the node is heard
from again. Stale conntrack entries towards removed endpoints are swept beside
the worker (``proxy/sweep.py``).

Cluster mesh (harness/agent/mesh/): remote clusters' objects arrive mirrored
under ``mesh/<remote>/`` of our own etcd. Global services (Cilium's
annotations) get remote backends by ``globalsvc.merge``; ServiceImports
(``mcs``) get a ClusterSetIP each and a ``clusterset.local`` name; remote
nodes hosting backends we may use are pinged (``reach``), and those that do not
answer lose their backends here until they do. On the control-plane node the
controller also stores the cluster's ServiceImports and export conditions
(``mcswriter``).

Reads (written by ``podlab apply``, the agents and the mesh syncer)::

    /podlab/v1/<cluster>/services/<ns>/<name>
    /podlab/v1/<cluster>/pods/<ns>/<name>
    /podlab/v1/<cluster>/podstatus/<ns>/<name>
    /podlab/v1/<cluster>/policies/<ns>/<name>
    /podlab/v1/<cluster>/namespaces/<name>
    /podlab/v1/<cluster>/serviceexports/<ns>/<name>
    /podlab/v1/<cluster>/serviceimports/<ns>/<name>
    /podlab/v1/<cluster>/serviceexportstatus/<ns>/<name>
    /podlab/v1/<cluster>/mesh/<remote>/{services,pods,podstatus,nodes,serviceexports}/…
    /podlab/v1/<cluster>/nodes/<name>          (liveness only)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.agent import policy
from harness.agent.dns import DnsServer, Zone, dns_ip
from harness.agent.liveness import NodeLiveness
from harness.agent.mesh import desired as mesh
from harness.agent.mesh import mcswriter
from harness.agent.mesh.reach import Reachability
from harness.agent.netprog import ProgrammingLatency, netprog_key
from harness.agent.proxy.base import PortChanges, ServiceProxy, local_service_route
from harness.agent.proxy.model import ServicePort
from harness.agent.proxy.registry import ProxyOptions, make_proxy
from harness.agent.proxy.sweep import Sweeper
from harness.agent.svcderive import Derived
from harness.agent.svcindex import ServicesIndex
from harness.store import KV, Event, Store
from harness.store.keys import cluster_prefix

__all__ = ["NodeLiveness", "ServicesConfig", "ServicesController"]
log = logging.getLogger("podlab.services")
#: passes start at least this long after the previous one ended: a change after a quiet
#: spell is programmed at once, and what arrives during (or just after) a pass is
#: gathered into the next one (kube-proxy's minSyncPeriod, its BoundedFrequencyRunner)
MIN_GAP_S = 0.02
SLOW_PASS_S = 0.5  # a programming pass longer than this is logged with its parts


@dataclass(frozen=True)
class ServicesConfig:
    cluster: str
    node: str
    service_cidr: str
    cluster_cidr: str | None
    proxy_mode: str = "nftables"
    dns: bool = True
    resync_s: float = 60.0  # full kernel sync (proxy table, policy) from what was derived
    recompute_s: float = 600.0  # also recompute every Service from the index (safety)
    netns: str | None = None  # None: the namespace the agent runs in
    node_grace_s: float = 40.0  # a silent node's pods stop being endpoints (node-monitor-grace)
    mcs_writer: bool = False  # store ServiceImports and export conditions (control plane)
    reach_interval_s: float = 0.3  # data-path probes of remote nodes (mesh/reach.py)
    ipvs_scheduler: str = "rr"  # proxy mode ipvs: the IPVS scheduler of every virtual server
    trace: bool = False  # log every pass's timeline (bench/bench_mesh.py reads it per hop)


class ServicesController:
    """Owns the proxy, the DNS server and the policy enforcer of one node."""

    def __init__(
        self, store: Store, cfg: ServicesConfig, lease: Callable[[], int] = lambda: 0
    ) -> None:
        self.store, self.cfg, self.lease = store, cfg, lease
        self.netprog = ProgrammingLatency()  # kube-proxy's network programming latency
        self._netprog_taken: list[float] = []  # its triggers the running pass applies
        self.prefix = cluster_prefix(cfg.cluster)
        self.index = ServicesIndex(cfg.cluster)
        # the node's own DNS server answers on kube-dns' address: its ports are not proxied
        hidden = dns_ip(cfg.service_cidr) if cfg.dns else None
        self.derived = Derived(cfg.cluster, cfg.node, cfg.dns, hidden_ip=hidden)
        self.lock = threading.Lock()
        self.dirty = threading.Event()
        self.synced = threading.Event()  # set after the first programming pass
        self.listed = threading.Event()  # set once the watch delivered its first listing
        self.passes = 0
        self.sweeper = Sweeper(cfg.netns)
        self.liveness = NodeLiveness(cfg.node_grace_s)
        self.clock: Callable[[], float] = time.monotonic  # tests substitute theirs
        opts = ProxyOptions(cfg.service_cidr, cfg.cluster_cidr, cfg.netns, cfg.ipvs_scheduler)
        self.proxy: ServiceProxy = make_proxy(cfg.proxy_mode, opts)
        self.policy = policy.PolicyEnforcer(cfg.netns)
        self.dns: DnsServer | None = None
        self._threads: list[threading.Thread] = []
        self.reach = Reachability(cfg.netns, cfg.reach_interval_s, on_change=self.dirty.set)
        self.mesh = mesh.MeshDesired()
        self._verdicts: tuple[frozenset[str], bool] = (frozenset(), False)
        self._names = 0  # service names recomputed by the last pass
        self._moved: set[str] = set()  # nodes whose liveness events changed since the pass
        self._mcs_synced: tuple[object, ...] | None = None  # what the writer last stored from
        # wall time of the first recorded change since the last pass, and how many
        # events brought changes (the pass trace: event → pass → programmed)
        self._events_at: float | None = None
        self._events_n = 0
        self._taken: tuple[float | None, int] = (None, 0)
        self.writer = (
            mcswriter.McsWriter(store, cfg.cluster, cfg.service_cidr) if cfg.mcs_writer else None
        )

    # --- recording -------------------------------------------------------------------
    def _node(self, key: str) -> str | None:
        """The node named by a ``nodes/<name>`` key, else None."""
        parts = key[len(self.prefix) :].split("/")
        return parts[1] if len(parts) == 2 and parts[0] == "nodes" and parts[1] else None

    def _record(self, kv: KV, deleted: bool, listing: bool = False) -> bool:
        obj = None
        if not deleted:
            try:
                obj = json.loads(kv.value)
            except ValueError:
                log.warning("ignoring unreadable %s", kv.key)
                return False
            if not isinstance(obj, dict):
                return False
        rel = kv.key[len(self.prefix) :]
        if rel.startswith("podstatus/"):
            if listing:  # a (re)listing's statuses are remembered, not observed
                self.netprog.listed(rel, obj)
            else:
                self.netprog.changed(rel, obj)
        return self.index.record(rel, obj)

    def on_reset(self, kvs: list[KV]) -> None:
        nodes = [n for n in (self._node(kv.key) for kv in kvs) if n]
        with self.lock:
            self.index = ServicesIndex(self.cfg.cluster)  # everything dirty
            self._moved.clear()
            for kv in kvs:
                if not self._node(kv.key):
                    self._record(kv, deleted=False, listing=True)
            self.liveness.reset(nodes, self.clock())
        self.listed.set()
        self.dirty.set()

    def on_events(self, events: list[Event]) -> None:
        now, wall = self.clock(), time.time()
        dirty = False
        with self.lock:
            for e in events:
                node = self._node(e.kv.key)
                if node:  # a heartbeat is news only if it changes liveness
                    live = self.liveness
                    news = live.gone(node) if e.type == "DELETE" else live.seen(node, now)
                    if news:  # its pods' services are recomputed (verdicts at the pass)
                        self._moved.add(node)
                    dirty |= news
                else:
                    dirty |= self._record(e.kv, e.type == "DELETE")
            if dirty:
                self._events_at = self._events_at or wall
                self._events_n += len(events)
        if dirty:
            self.dirty.set()

    # --- deriving --------------------------------------------------------------------
    def derive(self, full: bool = False) -> tuple[PortChanges, Zone, str]:
        """The service ports this pass changed (``current``: every one), the DNS zone and
        the policy table for what was recorded and the clock: only what changed since
        the last call is recomputed (everything if ``full``)."""
        now = self.clock()
        with self.lock:
            self._netprog_taken = self.netprog.begin()  # this pass's triggers
            verdicts = self.liveness.verdicts(now)
            if full or verdicts[1] != self._verdicts[1]:  # unknown nodes' verdict moved
                self.index.dirt.everything = True
            else:  # pods of nodes that died or came back: only the Services selecting them
                self.index.nodes_moved(self._moved | (verdicts[0] ^ self._verdicts[0]))
            self._moved = set()
            self._verdicts = verdicts
            dirt = self.index.take()
            self._taken = (self._events_at, self._events_n)  # the pass trace's events
            self._events_at, self._events_n = None, 0
            out = self.derived.update(
                self.index, dirt, lambda n: self.liveness.is_dead(n, now), self.reach.down()
            )
        self.mesh = mesh.MeshDesired(
            imports=out.imports, conditions=out.conditions, targets=out.targets
        )
        self.reach.set_targets(out.targets)
        for ident, was, state in out.state_moves:
            log.info("global service %s: %s → %s", ident, was, state)
        self._names = out.names
        return out.changes, out.zone, out.table

    def desired(self, full: bool = False) -> tuple[list[ServicePort], Zone, str]:
        """``derive`` with every port as a list (tests: what the proxy now holds)."""
        changes, zone, table = self.derive(full)
        return list(changes.current.values()), zone, table

    def _write_mcs(self, full: bool) -> None:
        """Store imports and export conditions when what they come from moved (the
        writer compares each with what is stored; without exports that is nothing)."""
        if self.writer is None:
            return
        with self.lock:
            imports, statuses = dict(self.index.imports), dict(self.index.export_status)
        seen = (self.mesh.imports, self.mesh.conditions, imports, statuses)
        if not full and seen == self._mcs_synced:
            return
        stored = self.writer.sync(self.mesh, imports, statuses)
        self._mcs_synced = seen if stored else None  # a failure: again on the next pass

    def program(self, full: bool = False, recompute: bool | None = None) -> None:
        """One pass: derive what changed (every Service if ``recompute``, by default as
        ``full``) and apply it; ``full``: the proxy and policy rebuilt whole."""
        t0, wall = time.monotonic(), time.time()
        changes, zone, table = self.derive(full if recompute is None else recompute)
        t1 = time.monotonic()
        if full:  # every port (drift repair); else only what this pass changed
            self.proxy.full_sync(changes.current.values())
        elif changes:
            self.proxy.apply(changes)
        t2 = time.monotonic()
        if full:
            self.sweeper.programmed(changes.current.values())
        elif changes:
            self.sweeper.changed(changes)
        if self.dns is not None:
            self.dns.update(zone)
        self.policy.apply(table, force=full)
        self.passes += 1
        self.synced.set()
        t3 = time.monotonic()
        if self.listed.is_set():  # the control plane's part (with a writer)
            self._write_mcs(full)
        t4 = time.monotonic()
        if self.cfg.trace:  # wall clock, so a bench can line it up with other processes'
            events_at, events_n = self._taken
            log.info(
                "pass trace: events %.4f (%d) start %.4f derived %.4f proxied %.4f done %.4f "
                "names %d full %d", events_at or 0.0, events_n, wall, wall + t1 - t0,
                wall + t2 - t0, wall + t4 - t0, self._names, full,
            )  # fmt: skip
        if t4 - t0 > SLOW_PASS_S:  # a slow pass delays every change
            log.info(
                "services pass took %.2f s (compute %.2f for %d names, proxy %.2f, "
                "dns+policy %.2f, mcs %.2f)", t4 - t0, t1 - t0, self._names, t2 - t1, t3 - t2,
                t4 - t3,
            )  # fmt: skip

    # --- running ---------------------------------------------------------------------
    def start(self, stop: threading.Event) -> None:
        """Start the DNS server, the watch and the worker (daemon threads)."""
        if self.cfg.dns:
            local_service_route(self.cfg.service_cidr, self.cfg.netns)
            self.dns = DnsServer(dns_ip(self.cfg.service_cidr), netns=self.cfg.netns)
        watch = threading.Thread(
            target=self.store.watch_prefix,
            args=(self.prefix, self.on_events, self.on_reset, stop),
            daemon=True,
            name="services-watch",
        )
        work = threading.Thread(target=self._work, args=(stop,), daemon=True, name="services")
        publish = threading.Thread(
            target=self.netprog.run_publisher,
            args=(self.store, netprog_key(self.cfg.cluster, self.cfg.node), self.lease, stop),
            daemon=True,
            name="netprog",
        )
        sweep = threading.Thread(target=self.sweeper.run, args=(stop,), daemon=True, name="sweep")
        self._threads = [watch, work, sweep, publish]
        for t in self._threads:
            t.start()
        self._threads.append(self.reach.start(stop))

    def _work(self, stop: threading.Event) -> None:
        """The worker: a pass whenever something is dirty (no fixed delay before it: a
        lone change waits for nothing), at most one per ``MIN_GAP_S`` after the last."""
        full_due = 0.0  # the first pass is a full sync
        recompute_due = 0.0  # … and recomputes every Service (the index is fresh anyway)
        ended = 0.0  # when the last pass ended (monotonic)
        while not stop.is_set():
            with self.lock:
                wake = max(0.005, self.liveness.next_verdict(self.clock()))
            self.dirty.wait(timeout=wake)
            if stop.is_set():
                break
            now = time.monotonic()
            with self.lock:  # a node crossing the grace sends no event: look each wake-up
                if self.liveness.changed(self.clock()):
                    self.dirty.set()
            if not self.dirty.is_set() and now < full_due:
                continue
            if (gap := ended + MIN_GAP_S - time.monotonic()) > 0:
                time.sleep(gap)  # right after a pass: let the rest of a burst land
            self.dirty.clear()
            full = now >= full_due
            recompute = full and now >= recompute_due
            try:
                self.program(full=full, recompute=recompute)
                self.netprog.done(self._netprog_taken)
            except Exception:
                self.netprog.retry(self._netprog_taken)
                log.exception("programming services/policy failed; retrying with a full sync")
                ended = time.monotonic()
                full_due = recompute_due = 0.0
                self.dirty.set()
                stop.wait(1.0)
                continue
            ended = time.monotonic()
            if full:
                full_due = now + self.cfg.resync_s
            if recompute:
                recompute_due = now + self.cfg.recompute_s

    def close(self) -> None:
        """Remove everything this node programmed (agent shutdown with cleanup)."""
        for t in self._threads:
            t.join(timeout=5)
        if self.dns is not None:
            self.dns.close()
        self.proxy.close()
        self.policy.close()
