"""Services, cluster DNS and NetworkPolicy on one node, fed by one etcd watch.

Felix's shape: watch events only *record* the new state (a key → object
cache) and mark the node dirty; one worker thread then recomputes everything
derived — the proxy's service ports (selectors × ready pods), the DNS zone,
this node's policy table — and flushes each once. Bursts of events (a
Deployment's worth of pods) therefore cost one programming pass, and every
pass sees a consistent snapshot. A periodic full sync (``resync_s``) repairs
drift: the proxy rebuilds its table, the policy table is re-applied.

Node failure: the agents' node records (``nodes/<name>``, rewritten every
heartbeat) are watched too, but only for liveness (``NodeLiveness``). A node
whose record is deleted or silent for ``node_grace_s`` is dead, and its pods are
treated as NotReady — Kubernetes' node lifecycle controller — so they leave the
service endpoints and headless DNS answers until the node is heard from again.

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
from typing import Any

from harness.agent import policy
from harness.agent.dns import DnsServer, Zone, dns_ip
from harness.agent.mesh import desired as mesh
from harness.agent.mesh import mcswriter
from harness.agent.mesh.globalsvc import GlobalPort
from harness.agent.mesh.reach import Reachability
from harness.agent.mesh.views import MESH, VIEW_KINDS
from harness.agent.proxy import conntrack
from harness.agent.proxy.base import ServiceProxy, local_service_route
from harness.agent.proxy.model import ServicePort
from harness.agent.proxy.registry import ProxyOptions, make_proxy
from harness.store import KV, Event, Store
from harness.store.keys import cluster_prefix

log = logging.getLogger("podlab.services")
KINDS = (
    "services", "pods", "podstatus", "policies", "namespaces",
    "serviceexports", "serviceimports", "serviceexportstatus", MESH,
)  # fmt: skip
DEBOUNCE_S = 0.02  # gathers a burst of events into one programming pass
SWEEP_S = 5.0  # how long after an endpoint's removal its stuck flows are swept
SLOW_PASS_S = 0.5  # a programming pass longer than this is logged with its parts


@dataclass(frozen=True)
class ServicesConfig:
    cluster: str
    node: str
    service_cidr: str
    cluster_cidr: str | None
    proxy_mode: str = "nftables"
    dns: bool = True
    resync_s: float = 60.0
    netns: str | None = None  # None: the namespace the agent runs in
    node_grace_s: float = 40.0  # a silent node's pods stop being endpoints (node-monitor-grace)
    mcs_writer: bool = False  # store ServiceImports and export conditions (control plane)
    reach_interval_s: float = 0.3  # data-path probes of remote nodes (mesh/reach.py)
    ipvs_scheduler: str = "rr"  # proxy mode ipvs: the IPVS scheduler of every virtual server


class NodeLiveness:
    """Which nodes are alive, judged by when their records were last written.

    Times are this process's monotonic clock at the moment an event arrived,
    never the heartbeat written inside the record: nodes' clocks differ, and
    ours only has to agree with itself. The watch is our only ear, so silence is
    measured against the newest write from *any* node: while nothing arrives at
    all (etcd down, or this node cut off from it) the clock stops ``grace_s / 2``
    after that write, and that deaf span counts against nobody once writes
    resume — an outage of our own must neither empty every service nor make the
    first heartbeat after it condemn all the nodes whose own have not arrived
    yet. Live agents write more often than every ``grace_s / 2`` (the agent
    config insists), so the pause never starts while we are listening.

    Not thread-safe: the controller calls it under its lock.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._last: dict[str, float] = {}  # node → last write, on the clock that judges
        self._wrote: dict[str, float] = {}  # node → last write, really (for the log)
        self._gone: set[str] = set()  # records deleted (lease expired, node removed)
        self._newest = 0.0  # the latest write from any node: proof we still hear etcd
        self._declared: set[str] = set()  # dead as of the last changed()
        self._unseen: dict[str, float] = {}  # back from the dead → how long it was silent

    def _clock(self, now: float) -> float:
        return min(now, self._newest + self.grace_s / 2)

    def _dead(self, name: str, now: float) -> bool:
        return name in self._gone or self._clock(now) - self._last[name] > self.grace_s

    def _hear(self, now: float) -> None:
        deaf = now - (self._newest + self.grace_s / 2)
        if self._last and deaf > 0:  # the clock stood still: shift everyone with it
            self._last = {name: t + deaf for name, t in self._last.items()}
        self._newest = max(self._newest, now)

    def seen(self, name: str, now: float) -> bool:
        """A write of ``name``'s record; True only when that changes its liveness
        (a new node, or one back from the dead) — a heartbeat is not news."""
        self._hear(now)
        prev = self._last.get(name)
        news = prev is None
        if prev is not None and self._dead(name, now):
            self._unseen[name] = now - self._wrote[name]  # back from the dead
            news = True
        self._last[name] = self._wrote[name] = now
        self._gone.discard(name)
        return news

    def gone(self, name: str) -> bool:
        """``name``'s record was deleted; True when that changes its liveness."""
        if name not in self._last or name in self._gone:
            return False
        self._gone.add(name)
        return True

    def reset(self, names: list[str], now: float) -> None:
        """A re-list: the records present count as written now, the others as deleted."""
        for name in set(self._last) - set(names):
            self._gone.add(name)
        for name in names:
            self.seen(name, now)

    def next_verdict(self, now: float) -> float:
        """Seconds until the next live node would cross the grace (at most 1 s): the
        controller wakes then, so a verdict is not late by a polling period."""
        due = [t + self.grace_s for n, t in self._last.items() if not self._dead(n, now)]
        return min([1.0, *(d - self._clock(now) + 0.005 for d in due)])

    def dead(self, now: float) -> set[str]:
        """The known nodes that are dead at ``now``."""
        return {name for name in self._last if self._dead(name, now)}

    def is_dead(self, name: str, now: float) -> bool:
        """Whether a pod bound to ``name`` sits on a dead node.

        A node without any record is dead once records exist at all (its agent
        never started, or its record is long gone); with none, nothing writes
        them (a controller without agents) and every node counts as alive.
        """
        if name in self._last:
            return self._dead(name, now)
        return bool(self._last)

    def changed(self, now: float) -> bool:
        """Whether the dead set moved since the last call: a node crossed the grace
        with no event to say so, or came back. Logs each verdict once."""
        dead = self.dead(now)
        if dead == self._declared:
            return False
        for name in sorted(dead - self._declared):
            why = "record deleted" if name in self._gone else "no heartbeat"
            log.info(
                "node %s is dead (%s, last seen %.1f s ago): its pods leave endpoints",
                name,
                why,
                now - self._wrote[name],
            )
        for name in sorted(self._declared - dead):
            log.info(
                "node %s is alive again (unseen for %.1f s): its pods are endpoints again",
                name,
                self._unseen.pop(name, 0.0),
            )
        self._declared = dead
        return True


def _not_ready(status: dict[str, Any]) -> dict[str, Any]:
    """A pod status as the node lifecycle controller leaves it when its node dies."""
    conds = [c for c in status.get("conditions", []) if c.get("type") != "Ready"]
    ready = {"type": "Ready", "status": "False", "reason": "NodeDead"}
    return {**status, "conditions": [*conds, ready]}


def _nodes_of(pods: list[dict[str, Any]]) -> set[str]:
    return {n for p in pods if (n := p.get("spec", {}).get("nodeName"))}


class ServicesController:
    """Owns the proxy, the DNS server and the policy enforcer of one node."""

    def __init__(self, store: Store, cfg: ServicesConfig) -> None:
        self.store, self.cfg = store, cfg
        self.prefix = cluster_prefix(cfg.cluster)
        self.cache: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.dirty = threading.Event()
        self.synced = threading.Event()  # set after the first programming pass
        self.listed = threading.Event()  # set once the watch delivered its first listing
        self.passes = 0
        self._targets: set[conntrack.Target] = set()  # endpoints programmed last pass
        self._gone: dict[conntrack.Target, float] = {}  # endpoints removed, and when
        self._gone_lock = threading.Lock()  # shared with the sweeper thread
        self._sweep_due = threading.Event()  # the worker wakes the sweeper
        self.liveness = NodeLiveness(cfg.node_grace_s)
        self.clock: Callable[[], float] = time.monotonic  # tests substitute theirs
        opts = ProxyOptions(cfg.service_cidr, cfg.cluster_cidr, cfg.netns, cfg.ipvs_scheduler)
        self.proxy: ServiceProxy = make_proxy(cfg.proxy_mode, opts)
        self.policy = policy.PolicyEnforcer(cfg.netns)
        self.dns: DnsServer | None = None
        self._threads: list[threading.Thread] = []
        self.reach = Reachability(cfg.netns, cfg.reach_interval_s, on_change=self.dirty.set)
        self.mesh = mesh.MeshDesired()
        self._states: dict[str, str] = {}  # global service port → how it picks backends
        self.writer = (
            mcswriter.McsWriter(store, cfg.cluster, cfg.service_cidr) if cfg.mcs_writer else None
        )

    # --- recording -------------------------------------------------------------------
    def _kind(self, key: str) -> str | None:
        rest = key[len(self.prefix) :]
        parts = rest.split("/")
        if parts[0] == MESH:  # mirrored: only what views need, and the syncer's record
            if len(parts) >= 3 and (parts[2] in VIEW_KINDS or parts[2:] == ["status"]):
                return MESH
            return None
        return parts[0] if parts[0] in KINDS else None

    def _news(self, key: str, value: bytes | None) -> bool:
        """Whether a mirrored write matters to programming: a remote heartbeat (its
        node record rewritten) or the syncer's status record does not."""
        parts = key[len(self.prefix) :].split("/")
        if parts[0] != MESH or len(parts) < 3:
            return True
        if parts[2:] == ["status"]:
            return False
        if parts[2] != "nodes" or value is None:
            return True
        old = self.cache.get(key)
        try:
            new = json.loads(value)
        except ValueError:
            return True
        return old is None or old.get("underlayIP") != new.get("underlayIP")

    def _node(self, key: str) -> str | None:
        """The node named by a ``nodes/<name>`` key, else None."""
        parts = key[len(self.prefix) :].split("/")
        return parts[1] if len(parts) == 2 and parts[0] == "nodes" and parts[1] else None

    def _put(self, kv: KV) -> None:
        try:
            self.cache[kv.key] = json.loads(kv.value)
        except ValueError:
            log.warning("ignoring unreadable %s", kv.key)

    def on_reset(self, kvs: list[KV]) -> None:
        nodes = [n for n in (self._node(kv.key) for kv in kvs) if n]
        with self.lock:
            self.cache = {}
            for kv in kvs:
                if self._kind(kv.key):
                    self._put(kv)
            self.liveness.reset(nodes, self.clock())
        self.listed.set()
        self.dirty.set()

    def on_events(self, events: list[Event]) -> None:
        now = self.clock()
        dirty = False
        with self.lock:
            for e in events:
                node = self._node(e.kv.key)
                if node:  # a heartbeat is news only if it changes liveness
                    live = self.liveness
                    dirty |= live.gone(node) if e.type == "DELETE" else live.seen(node, now)
                elif self._kind(e.kv.key):
                    news = self._news(e.kv.key, None if e.type == "DELETE" else e.kv.value)
                    if e.type == "DELETE":
                        self.cache.pop(e.kv.key, None)
                    else:
                        self._put(e.kv)
                    dirty |= news
        if dirty:
            self.dirty.set()

    # --- deriving --------------------------------------------------------------------
    def snapshot(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        with self.lock:
            out: dict[str, list[tuple[str, dict[str, Any]]]] = {k: [] for k in KINDS}
            for key, obj in self.cache.items():
                kind = self._kind(key)
                if kind:
                    out[kind].append((key, obj))
        return out

    def desired(self) -> tuple[list[ServicePort], Zone, str]:
        """Service ports, DNS zone and policy table for the current cache and clock."""
        snap = self.snapshot()
        pods = [o for _, o in snap["pods"]]
        statuses: dict[tuple[str, str], dict[str, Any]] = {}
        for key, obj in snap["podstatus"]:
            ns, name = key.rsplit("/", 2)[-2:]
            statuses[(ns, name)] = obj
        # pods on dead nodes count as NotReady for endpoints and DNS; policy keeps them
        now = self.clock()
        with self.lock:
            dead = {n for n in _nodes_of(pods) if self.liveness.is_dead(n, now)}
        served = statuses
        if dead:
            served = dict(statuses)
            for p in pods:
                ref = (p["metadata"].get("namespace", "default"), p["metadata"]["name"])
                if p.get("spec", {}).get("nodeName") in dead and ref in served:
                    served[ref] = _not_ready(served[ref])
        services = [o for _, o in snap["services"]]
        inputs = ("services", "pods", "podstatus", "serviceexports", "serviceimports", MESH)
        items = [(k[len(self.prefix) :], o) for kind in inputs for k, o in snap[kind]]
        self.mesh = mesh.compute(self.cfg.cluster, items, served, self.reach.down())
        self.reach.set_targets(self.mesh.targets)
        self._log_states(self.mesh.ports)
        ports = [g.port for g in self.mesh.ports]
        if self.cfg.dns:  # the node's own DNS server answers on kube-dns' address
            ports = [p for p in ports if p.cluster_ip != dns_ip(self.cfg.service_cidr)]
        zone = Zone.build(services, pods, served) if self.cfg.dns else Zone()
        for record in self.mesh.clusterset:
            zone.add_clusterset(*record)
        ns_labels = {
            k.rsplit("/", 1)[-1]: o.get("metadata", {}).get("labels", {})
            for k, o in snap["namespaces"]
        }
        local = {
            (p["metadata"].get("namespace", "default"), p["metadata"]["name"])
            for p in pods
            if p.get("spec", {}).get("nodeName") == self.cfg.node
        }
        infos = policy.pods_from_store(pods, statuses, self.cfg.cluster)
        for view in self.mesh.remotes:  # remote pods are policy peers (mirrored)
            infos += policy.remote_pods(view.name, view.pods, view.statuses)
        table = policy.ruleset([o for _, o in snap["policies"]], infos, ns_labels, local)
        return ports, zone, table

    def _log_states(self, ports: list[GlobalPort]) -> None:
        """One INFO line when a global service port changes how it picks backends
        (failover to the other cluster, spill-over while coming back, flip-back)."""
        states = {g.port.ident: g.state for g in ports if g.state != "local"}
        for ident, state in sorted(states.items()):
            if self._states.get(ident, state) != state:
                log.info("global service %s: %s → %s", ident, self._states[ident], state)
        self._states = states

    def program(self, full: bool = False) -> None:
        t0 = time.monotonic()
        ports, zone, table = self.desired()
        t1 = time.monotonic()
        if full:
            self.proxy.full_sync(ports)
        else:
            self.proxy.update(ports)
        t2 = time.monotonic()
        now, at = conntrack.targets(ports), time.monotonic()
        with self._gone_lock:
            self._gone = {t: since for t, since in self._gone.items() if t not in now}
            self._gone.update({t: at for t in self._targets - now})
            if self._gone:
                self._sweep_due.set()
        self._targets = now
        if self.dns is not None:
            self.dns.update(zone)
        self.policy.apply(table, force=full)
        self.passes += 1
        self.synced.set()
        t3 = time.monotonic()
        if self.writer is not None and self.listed.is_set():  # the control plane's part
            self.writer.sync(
                self.mesh, self._stored("serviceimports"), self._stored("serviceexportstatus")
            )
        if (t4 := time.monotonic()) - t0 > SLOW_PASS_S:  # a slow pass delays every change
            log.info(
                "services pass took %.2f s (compute %.2f, proxy %.2f, dns+policy %.2f, "
                "mcs %.2f)", t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3,
            )  # fmt: skip

    def _stored(self, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
        """What the cache holds of a namespaced kind, by (namespace, name)."""
        with self.lock:
            return {
                (parts[-2], parts[-1]): obj
                for key, obj in self.cache.items()
                if (parts := key[len(self.prefix) :].split("/"))[0] == kind and len(parts) == 3
            }

    def _sweep(self) -> None:
        """Forget conntrack entries stuck on endpoints removed in the last SWEEP_S
        (conntrack.py: a SYN must go unanswered a while before its entry counts as
        stuck, so one sweep at removal time is not enough)."""
        cutoff = time.monotonic() - SWEEP_S
        with self._gone_lock:
            self._gone = {t: since for t, since in self._gone.items() if since >= cutoff}
            gone = set(self._gone)
            if not gone:
                self._sweep_due.clear()
                return
        start = time.monotonic()
        try:
            forgotten = conntrack.forget_niced(gone, self.cfg.netns)
        except Exception as exc:  # best effort: the datapath is programmed either way
            log.warning("could not sweep conntrack for removed endpoints: %s", exc)
            return
        if (took := time.monotonic() - start) > SLOW_PASS_S:
            log.info("conntrack sweep took %.2f s (%d entries forgotten)", took, forgotten)

    def _sweeper(self, stop: threading.Event) -> None:
        """Sweeps in a thread of their own, each in a niced child process: dumping a
        busy conntrack table takes seconds (measured 19-30 s for a node whose client
        opened 50 connections/s on a loaded machine), and a programming pass must
        never wait for tidying up, nor share the interpreter with it."""
        while not stop.is_set():
            if self._sweep_due.wait(timeout=1.0):
                self._sweep()
                stop.wait(1.0)  # a SYN needs a while unanswered before it counts as stuck

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
        sweep = threading.Thread(target=self._sweeper, args=(stop,), daemon=True, name="sweep")
        self._threads = [watch, work, sweep]
        for t in self._threads:
            t.start()
        self._threads.append(self.reach.start(stop))

    def _work(self, stop: threading.Event) -> None:
        full_due = 0.0  # the first pass is a full sync
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
            time.sleep(DEBOUNCE_S)
            self.dirty.clear()
            full = now >= full_due
            try:
                self.program(full=full)
            except Exception:
                log.exception("programming services/policy failed; retrying with a full sync")
                full_due = 0.0
                self.dirty.set()
                stop.wait(1.0)
                continue
            if full:
                full_due = now + self.cfg.resync_s

    def close(self) -> None:
        """Remove everything this node programmed (agent shutdown with cleanup)."""
        for t in self._threads:
            t.join(timeout=5)
        if self.dns is not None:
            self.dns.close()
        self.proxy.close()
        self.policy.close()
