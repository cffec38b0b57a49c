"""The node agent's long-running process: one node's flanneld + CNI bridge plugin,
driven by etcd (``podlab-agent``, started by ``harness.agent.main``).

Start-up: load agent.yaml, lease the node's subnet, remove what another mode made
here (``retire.py``: the node may have been switched), set up the mode's devices,
write subnet.env, load the masquerade ruleset, register the node record, then
watch ``subnets/`` (peers) and ``pods/`` and reconcile on every change and every
``resync_s`` seconds (which re-adds anything someone deleted). SIGTERM exits
cleanly WITHOUT removing pods, routes or devices (like flanneld), so a restart or
a ``kill -9`` leaves running pods and flows alone; the next start reconciles.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import config as pyroute2_config
from pyroute2.netlink.exceptions import NetlinkError

from harness import __version__
from harness.agent import leases, metrics, nft, retire
from harness.agent import netlink as nl
from harness.agent.cache import Cache, MeshCache, PeerCache, as_object
from harness.agent.config import AgentConfig
from harness.agent.datapath import registry
from harness.agent.datapath.base import Tunnel
from harness.agent.pods import PodManager, PodSpec, PodState, now_rfc3339, status_json
from harness.agent.reconcile import Reconciler
from harness.agent.services import ServicesConfig, ServicesController
from harness.errors import ToolError
from harness.store import Store, StoreError, wait_ready
from harness.store.keys import cluster_prefix, node_key, pod_key, podstatus_key

log = logging.getLogger("podlab.agent")


class Agent:
    """The long-running agent; ``start()`` then ``run()`` until ``stop`` is set."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.store = Store(cfg.etcd_endpoints)
        self.ipr = IPRoute()
        self.dp = registry.create(cfg, self.ipr)
        self.reconciler = Reconciler(self.ipr, self.dp)
        self.created: str | None = None  # the node record's creationTimestamp (AGE)
        self.stop = threading.Event()
        self.dirty = threading.Event()
        self.subnets = PeerCache(self.dirty, skip_node=cfg.node)
        self.pods = Cache(self.dirty)
        self.mesh = MeshCache(self.dirty, cfg.cluster) if cfg.mesh else None
        self.no_nat: list[ipaddress.IPv4Network] = []
        self.tunnels: list[Tunnel] = []  # the outer packets the node ruleset exempts
        self.problems: list[str] = []
        self._written: dict[str, str] = {}
        self.pod_states: dict[tuple[str, str], PodState] = {}
        self._desired: dict[tuple[str, str], PodSpec] = {}
        # statuses are written by pod workers too: one lock per status key keeps each
        # pod's writes in order without making every worker wait for the others' puts
        self._status_locks: dict[str, threading.Lock] = {}
        self._status_guard = threading.Lock()
        self.unready = False
        self.terminating = False  # pods in a graceful stop: the loop polls them
        self.exit_code = 0
        self.stop_signalled = 0.0  # monotonic time of SIGTERM/SIGINT
        self.on_ready: Callable[[], None] | None = None  # after the first heartbeat

    def start(self) -> None:
        began = time.monotonic()
        cfg = self.cfg
        log.info(
            "podlab-agent %s: node %s, cluster %s, mode %s, MTU %d, underlay %s (%s)",
            __version__,
            cfg.node,
            cfg.cluster,
            cfg.mode,
            self.dp.mtu(),
            cfg.underlay_address,
            cfg.underlay_interface,
        )
        if cfg.encryption != "none":  # harness/agent/encryption.py layers it on the mode
            log.info("encryption %s between nodes for pod traffic", cfg.encryption)
        wait_ready(self.store, timeout=60)
        self.lease = leases.acquire(self.store, cfg, self.dp.backend_data())
        # what an earlier mode or encryption setting made here and this one does not own
        # (a flannel.1 under bgp, a BIRD still announcing, a wireguard-go, cni0 ...)
        retire.retire(
            self.ipr,
            retire.leftovers(cfg),
            f"not owned by mode {cfg.mode} with encryption {cfg.encryption}",
        )
        self.dp.setup(self.lease.subnet)
        env = leases.write_subnet_env(cfg, self.lease, self.dp.mtu())
        log.info("subnet %s, wrote %s", self.lease.subnet, env)
        nl.set_sysctl("net/ipv4/ip_forward", "1")  # this node's namespace only
        self.tunnels = self.dp.tunnels()  # before the first sync: no peers known yet
        nft.apply(self._node_ruleset())
        self.podmgr = PodManager(
            cfg,
            self.ipr,
            self.lease.subnet,
            self.dp.mtu(),
            self.dp.pod_interface,
            on_ready=self._publish,
        )
        self.podmgr.prepare()  # also the CNI plugin, its conflists and its server
        self.capacity = metrics.capacity(cfg.capacity)
        self.podmgr.exits.on_exit = self.pods.poke  # a pod process exited: a quick pass now
        self.heartbeat()
        if self.on_ready is not None:  # the deploy's proof of this start (--ready-file)
            self.on_ready()
        # what a restart costs (a mode switch restarts every agent at once): the first
        # heartbeat is what the deploy's readiness check waits for
        usage = resource.getrusage(resource.RUSAGE_SELF)
        log.info(
            "ready in mode %s: first heartbeat %.2f s after the process started, "
            "%.2f s after its start-up began (%.2f s CPU since the process started)",
            cfg.mode,
            process_age_s(),
            time.monotonic() - began,
            usage.ru_utime + usage.ru_stime,
        )
        prefix = cluster_prefix(cfg.cluster)
        watched: list[tuple[str, Cache]] = [("subnets/", self.subnets), ("pods/", self.pods)]
        if self.mesh is not None:  # the syncer's mirror of the other clusters
            watched.append(("mesh/", self.mesh))
        for what, cache in watched:
            threading.Thread(
                target=self.store.watch_prefix,
                args=(prefix + what, cache.events, cache.reset, self.stop),
                name=f"watch-{what.rstrip('/')}",
                daemon=True,
            ).start()
        # kube-proxy + cluster DNS + NetworkPolicy for this node (harness/agent/services.py)
        self.services = ServicesController(
            self.store,
            ServicesConfig(
                cfg.cluster,
                cfg.node,
                str(cfg.service_cidr),
                str(cfg.pod_cidr),
                cfg.proxy_mode,
                node_grace_s=cfg.node_grace_s,
                mcs_writer=cfg.role == "control-plane",
                ipvs_scheduler=cfg.ipvs_scheduler,
                trace=cfg.trace_services,
            ),
            lease=lambda: self.lease.lease_id,
        )
        self.services.start(self.stop)
        # pods' CPU and memory for the autoscaler and `podlab top` (harness/agent/metrics.py)
        publisher = metrics.Publisher(
            self.store,
            cfg.cluster,
            cfg.node,
            self.podmgr.cgroups,
            lambda: list(self.pod_states),
            lambda: self.lease.lease_id,
            cfg.metrics_interval_s,
        )
        threading.Thread(
            target=publisher.run, args=(self.stop,), name="metrics", daemon=True
        ).start()

    def heartbeat(self) -> None:
        """Renew the lease and refresh the node record (its heartbeat is --check's proof)."""
        before = self.lease.subnet
        if leases.renew(self.store, self.cfg, self.lease, self.dp.backend_data()):
            log.warning("lease re-established for subnet %s", self.lease.subnet)
            if self.lease.subnet != before:
                # Another node took our subnet while our lease was expired: devices and
                # pods are addressed from the old one. Exit; the supervisor restarts us.
                log.error("lost subnet %s (now %s); exiting to restart", before, self.lease.subnet)
                self.exit_code = 1
                self.stop.set()
        if self.created is None:  # a restart keeps the record's age, as a Node object does
            kv = self.store.get(node_key(self.cfg.cluster, self.cfg.node))
            old = kv.json() if kv is not None else None
            kept = old.get("creationTimestamp") if isinstance(old, dict) else None
            self.created = str(kept) if kept else now_rfc3339()
        record = {
            "name": self.cfg.node,
            "cluster": self.cfg.cluster,
            "creationTimestamp": self.created,
            "underlayIP": str(self.cfg.underlay_address),
            "segment": self.cfg.segment,
            "role": self.cfg.role,
            "podCIDR": str(self.lease.subnet),
            "mode": self.cfg.mode,
            "mtu": self.dp.mtu(),
            "backend": self.dp.backend_data(),
            "agentVersion": __version__,
            "capacity": self.capacity,  # the scheduler fits pods' requests into these
            "allocatable": self.capacity,
            "cgroups": self.podmgr.cgroups.driver,
            "heartbeat": now_rfc3339(),
            "problems": self.problems,
        }
        try:
            self.store.put_json(
                node_key(self.cfg.cluster, self.cfg.node), record, self.lease.lease_id
            )
        except StoreError as exc:
            self.podmgr.cni.write_health(etcd_ok=False, error=str(exc))
            raise
        self.podmgr.cni.write_health(etcd_ok=True)

    def reconcile(self, datapath: bool = True, pods: bool = True, full: bool = True) -> None:
        """One pass over the datapath peers and/or the pods and their status records."""
        if datapath:
            self._sync_datapath(full)
        if pods:
            self._sync_pods(full)

    def _sync_datapath(self, full: bool = True) -> None:
        if self.mesh is not None and not self.mesh.synced:
            return  # reconciling without the remote peers would drop their routes
        peers = self.subnets.peers()
        if self.mesh is not None:
            peers += self.mesh.peers()
            self._sync_no_nat(self.mesh.pod_cidrs())
        report = self.reconciler.sync(peers, full)
        self._sync_tunnels()
        if report.changed or report.failed:
            log.info(
                "datapath: %d peers, %d objects set, %d removed, %d failed",
                len(peers),
                report.added,
                report.removed,
                report.failed,
            )
        if report.problems != self.problems:
            for p in report.problems:  # worked around (no route to that peer), not fatal
                log.warning("%s", p)
            self.problems = report.problems
            self.heartbeat()

    def _node_ruleset(self) -> dict[str, Any]:
        """Tables ``ip podlab`` (masquerade, less the mesh's pod CIDRs; untracked
        outgoing tunnel packets) and ``netdev podlab-underlay`` (untracked incoming)."""
        cfg = self.cfg
        return nft.masquerade_ruleset(cfg.pod_cidr, self.no_nat, self.tunnels,
                                      cfg.underlay_address, cfg.service_cidr,
                                      cfg.underlay_interface)  # fmt: skip

    def _sync_tunnels(self) -> None:
        """Re-apply the node ruleset when the tunnels to exempt changed (cross-subnet)."""
        tunnels = self.dp.tunnels()
        if tunnels != self.tunnels:
            self.tunnels = tunnels
            nft.apply(self._node_ruleset())
            log.info("conntrack exemption for tunnel packets: %s",
                     ", ".join(f"{t.proto} {t.port}" for t in tunnels) or "none")  # fmt: skip

    def _sync_no_nat(self, cidrs: list[ipaddress.IPv4Network]) -> None:
        """Pods of other clusters of the mesh are reached by pod IP: no masquerade."""
        if cidrs != self.no_nat:
            self.no_nat = cidrs
            nft.apply(self._node_ruleset())
            log.info("masquerade: pod traffic to %s keeps pod addresses", cidrs or "no mesh peer")

    def _desired_pods(self) -> dict[tuple[str, str], PodSpec]:
        desired: dict[tuple[str, str], PodSpec] = {}
        for obj in self.pods.values():
            if (obj.get("spec") or {}).get("nodeName") != self.cfg.node:
                continue
            try:
                spec = PodSpec.from_object(obj)
            except (KeyError, TypeError, AttributeError) as exc:
                log.warning("ignoring malformed pod object: %s", exc)
                continue
            desired[(spec.namespace, spec.name)] = spec
        return desired

    def _sync_pods(self, full: bool) -> None:
        desired = self._desired = self._desired_pods()
        self.pod_states = self.podmgr.sync(desired, full)
        terminating = {k: s for k, s in desired.items() if s.terminating}
        for ref, spec in terminating.items():
            if ref not in self.pod_states:  # stopped and removed: finish the delete
                self._forget_pod(ref, spec.uid)
        self.terminating = any(k in self.pod_states for k in terminating)
        self._probe(desired, everyone=full)
        keys = {podstatus_key(self.cfg.cluster, ns, n) for ns, n in self.pod_states}
        for key in set(self._written) - keys:  # pods this agent removed
            self.store.delete(key)
            del self._written[key]
            with self._status_guard:
                self._status_locks.pop(key, None)
        if full:  # also statuses a previous run left behind for pods now gone
            prefix = cluster_prefix(self.cfg.cluster) + "podstatus/"
            for kv in self.store.get_prefix(prefix)[0]:
                st = as_object(kv) or {}
                # a hollow runner on this node answers with its address: not our leftovers
                mine = st.get("hostIP") == str(self.cfg.underlay_address) and not st.get("hollow")
                if mine and kv.key not in keys:
                    self.store.delete(kv.key)

    def _forget_pod(self, key: tuple[str, str], uid: str) -> None:
        """Remove a gracefully deleted pod's object, unless a new pod took its name."""
        pkey = pod_key(self.cfg.cluster, *key)
        kv = self.store.get(pkey)
        if kv is None or (as_object(kv) or {}).get("metadata", {}).get("uid", "") != uid:
            return
        if self.store.delete_if(pkey, kv.mod_revision):
            log.info("pod %s/%s: deleted", *key)

    def _probe(self, desired: dict[tuple[str, str], PodSpec], everyone: bool) -> None:
        """Readiness probes (all pods on a full pass, else the not-yet-ready), then
        write every status that changed."""
        self.unready = False
        for key, st in self.pod_states.items():
            spec = desired.get(key)
            if spec is None:
                continue
            if everyone or not st.ready or st.probe_failures:
                self.podmgr.check_ready(spec, st)
            # not Ready yet, or failing probes: look again soon (the loop's 0.2 s)
            self.unready |= st.phase == "Running" and (not st.ready or st.probe_failures > 0)
            self._publish(key, st)

    def _publish(self, key: tuple[str, str], st: PodState) -> None:
        """Write a pod's status if it changed (pod workers call this the moment a pod is
        up, so the first pods of a burst are not held back by the last)."""
        spec = self._desired.get(key)
        container = spec.container if spec is not None else "main"
        skey = podstatus_key(self.cfg.cluster, *key)
        value = _dumps(status_json(st, str(self.cfg.underlay_address), container))
        with self._status_guard:
            lock = self._status_locks.setdefault(skey, threading.Lock())
        with lock:
            if self._written.get(skey) != value:
                self.store.put(skey, value)
                self._written[skey] = value

    def run(self) -> None:
        next_beat = time.monotonic() + self.cfg.heartbeat_s
        next_resync = 0.0
        while not self.stop.is_set():
            timeout = max(0.0, min(next_beat, next_resync) - time.monotonic())
            if self.unready or self.terminating:  # a probe or a graceful stop to follow
                timeout = min(timeout, 0.2)
            if self.dirty.wait(timeout):
                if self.stop.is_set():
                    break
                time.sleep(0.02)  # let a burst of events land, then act once
            try:
                if time.monotonic() >= next_beat:
                    self.heartbeat()
                    next_beat = time.monotonic() + self.cfg.heartbeat_s
                self.dirty.clear()
                resync = time.monotonic() >= next_resync
                if resync:
                    next_resync = time.monotonic() + self.cfg.resync_s
                pods = self.pods.take_changed(resync)
                datapath = self.subnets.take_changed(resync)
                if self.mesh is not None:
                    datapath = self.mesh.take_changed(resync) or datapath
                self.reconcile(datapath=datapath, pods=pods, full=resync)
                if self.terminating and not pods:
                    self.reconcile(datapath=False, pods=True, full=False)
                elif self.unready and not pods:
                    self._probe(self._desired_pods(), everyone=False)
            except StoreError as exc:
                log.error("etcd: %s (kernel state left as is; retrying)", exc)
                next_resync = 0.0  # the failed pass may have consumed change flags
                self.stop.wait(1.0)
            except Exception:
                log.exception("reconcile failed; retrying")
                next_resync = 0.0
                self.stop.wait(1.0)
        self.dp.close()
        self.podmgr.close()
        # how long a stop takes is part of every restart (a mode switch restarts them all)
        took = time.monotonic() - self.stop_signalled if self.stop_signalled else 0.0
        log.info("stopped; pods, routes and devices left in place (%.2f s after the signal)", took)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def process_age_s() -> float:
    """Seconds since this process started (its start time in /proc against the uptime)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return float("nan")


def serve(cfg: AgentConfig, on_ready: Callable[[], None] | None = None) -> int:
    """Run the agent until SIGTERM (or SIGINT); its exit status. ``on_ready`` is called
    once, right after the first heartbeat is in etcd (``--ready-file``)."""
    if nl.in_root_netns() and not cfg.allow_root_netns:
        log.error(
            "refusing to run in the host's initial network namespace; run inside a "
            "node namespace, or set allow_root_netns: true on a dedicated machine"
        )
        return 2
    # pyroute2 gives the helper process that creates a netns (or a socket in one)
    # 2 s to answer; an emulated VM under load can take longer, and a killed helper
    # leaves a netns placeholder behind. Slow is fine; failing a pod is not.
    pyroute2_config.default_communicate_timeout = 60
    try:
        agent = Agent(cfg)
        agent.on_ready = on_ready
    except registry.UnknownMode as exc:
        log.error("%s", exc)
        return 2

    def _stop(*_: object) -> None:  # wake the loop too: it may sleep until the next heartbeat
        agent.stop_signalled = agent.stop_signalled or time.monotonic()
        agent.stop.set()
        agent.dirty.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    try:
        agent.start()
    except (StoreError, leases.LeaseError, ToolError) as exc:
        log.error("start-up failed: %s", exc)
        return 1
    except (OSError, RuntimeError, NetlinkError) as exc:
        log.exception("start-up failed while setting up the %s datapath: %s", cfg.mode, exc)
        return 1
    agent.run()
    return agent.exit_code
