"""Services, cluster DNS and NetworkPolicy on one node, fed by one etcd watch.

Felix's shape: watch events only *record* the new state (a key → object
cache) and mark the node dirty; one worker thread then recomputes everything
derived — the proxy's service ports (selectors × ready pods), the DNS zone,
this node's policy table — and flushes each once. Bursts of events (a
Deployment's worth of pods) therefore cost one programming pass, and every
pass sees a consistent snapshot. A periodic full sync (``resync_s``) repairs
drift: the proxy rebuilds its table, the policy table is re-applied.

Reads (written by ``podlab apply`` and the agents)::

    /podlab/v1/<cluster>/services/<ns>/<name>
    /podlab/v1/<cluster>/pods/<ns>/<name>
    /podlab/v1/<cluster>/podstatus/<ns>/<name>
    /podlab/v1/<cluster>/policies/<ns>/<name>
    /podlab/v1/<cluster>/namespaces/<name>
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from harness.agent import policy
from harness.agent.dns import DnsServer, Zone, dns_ip
from harness.agent.proxy.base import ServiceProxy, local_service_route
from harness.agent.proxy.model import ServicePort, endpoints_for
from harness.agent.proxy.registry import ProxyOptions, make_proxy
from harness.agent.store import KV, Event, Store, cluster_prefix

log = logging.getLogger("podlab.services")
KINDS = ("services", "pods", "podstatus", "policies", "namespaces")
DEBOUNCE_S = 0.02  # gathers a burst of events into one programming pass


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


class ServicesController:
    """Owns the proxy, the DNS server and the policy enforcer of one node."""

    def __init__(self, store: Store, cfg: ServicesConfig) -> None:
        self.store, self.cfg = store, cfg
        self.prefix = cluster_prefix(cfg.cluster)
        self.cache: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.dirty = threading.Event()
        self.synced = threading.Event()  # set after the first programming pass
        self.passes = 0
        opts = ProxyOptions(cfg.service_cidr, cfg.cluster_cidr, cfg.netns)
        self.proxy: ServiceProxy = make_proxy(cfg.proxy_mode, opts)
        self.policy = policy.PolicyEnforcer(cfg.netns)
        self.dns: DnsServer | None = None
        self._threads: list[threading.Thread] = []

    # --- recording -------------------------------------------------------------------
    def _kind(self, key: str) -> str | None:
        rest = key[len(self.prefix) :]
        kind = rest.split("/", 1)[0]
        return kind if kind in KINDS else None

    def _put(self, kv: KV) -> None:
        try:
            self.cache[kv.key] = json.loads(kv.value)
        except ValueError:
            log.warning("ignoring unreadable %s", kv.key)

    def on_reset(self, kvs: list[KV]) -> None:
        with self.lock:
            self.cache = {}
            for kv in kvs:
                if self._kind(kv.key):
                    self._put(kv)
        self.dirty.set()

    def on_events(self, events: list[Event]) -> None:
        relevant = [e for e in events if self._kind(e.kv.key)]
        if not relevant:
            return  # node heartbeats, leases…
        with self.lock:
            for e in relevant:
                if e.type == "DELETE":
                    self.cache.pop(e.kv.key, None)
                else:
                    self._put(e.kv)
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
        """Service ports, DNS zone and policy table for the current cache (pure)."""
        snap = self.snapshot()
        pods = [o for _, o in snap["pods"]]
        statuses: dict[tuple[str, str], dict[str, Any]] = {}
        for key, obj in snap["podstatus"]:
            ns, name = key.rsplit("/", 2)[-2:]
            statuses[(ns, name)] = obj
        services = [o for _, o in snap["services"]]
        ports = [p for svc in services for p in endpoints_for(svc, pods, statuses)]
        if self.cfg.dns:  # the node's own DNS server answers on kube-dns' address
            ports = [p for p in ports if p.cluster_ip != dns_ip(self.cfg.service_cidr)]
        zone = Zone.build(services, pods, statuses) if self.cfg.dns else Zone()
        ns_labels = {
            k.rsplit("/", 1)[-1]: o.get("metadata", {}).get("labels", {})
            for k, o in snap["namespaces"]
        }
        local = {
            (p["metadata"].get("namespace", "default"), p["metadata"]["name"])
            for p in pods
            if p.get("spec", {}).get("nodeName") == self.cfg.node
        }
        infos = policy.pods_from_store(pods, statuses)
        table = policy.ruleset([o for _, o in snap["policies"]], infos, ns_labels, local)
        return ports, zone, table

    def program(self, full: bool = False) -> None:
        ports, zone, table = self.desired()
        if full:
            self.proxy.full_sync(ports)
        else:
            self.proxy.update(ports)
        if self.dns is not None:
            self.dns.update(zone)
        self.policy.apply(table, force=full)
        self.passes += 1
        self.synced.set()

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
        self._threads = [watch, work]
        for t in self._threads:
            t.start()

    def _work(self, stop: threading.Event) -> None:
        full_due = 0.0  # the first pass is a full sync
        while not stop.is_set():
            self.dirty.wait(timeout=1.0)
            if stop.is_set():
                break
            now = time.monotonic()
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
