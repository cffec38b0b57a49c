"""Pods on this node: a named netns, attached through the CNI plugin, and a process.

For every pod whose ``spec.nodeName`` is this node the agent, as a container
runtime would: creates a network namespace bind-mounted at ``<netns_dir>/<netns>``
(the node's private ``/run/netns`` by default, so ``ip netns exec`` works),
attaches it to the pod network by running ``podlab-cni`` (``podcni.py``: ADD,
DEL, CHECK and GC through ``harness/cni/runtime.py``, results cached as libcni
does), and starts the pod's command (``containers[0].command + args``; ``sleep
infinity`` if empty) detached, with its output in ``log_dir/pods/<ns>_<name>.log``
(procs.py), so killing the agent leaves the pod running. The agent learns of
the command's exit at once (supervise.py: a pidfd per pod process, adopted ones
too) and ``restartPolicy`` (Always, the default; OnFailure; Never) decides
whether it is started again — with the kubelet's CrashLoopBackOff — or
reported as Succeeded/Failed.

Concurrency: new pods are set up, and gone pods removed, by a pool of
``pod_workers`` threads; each pod's status is handed to ``on_ready`` the moment
it is attached and running, not when the whole batch is. Bookkeeping stays
exactly-once: one worker per pod per pass; the pod's state file (with its CNI
container ID) is written before its namespace exists, and ``attaching`` marks an
ADD in flight, so a crash at any point is followed by a DEL and a fresh ADD (or
by GC, for a pod that is gone by then). Addresses come from the plugin's IPAM;
a re-attached pod (a mode switch changes its interface style or MTU) asks for
the address it had.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict
from functools import partial
from pathlib import Path

from pyroute2 import IPRoute

from harness.agent import cgroups, dns, podcni, procs, supervise
from harness.agent import netlink as nl
from harness.agent.config import AgentConfig
from harness.agent.datapath.base import PodInterface
from harness.agent.leases import atomic_write
from harness.agent.podstate import PodSpec, PodState, netns_name, now_rfc3339, status_json
from harness.cni import ipam, links, nsutil
from harness.cni.runtime import PluginError
from harness.exec import run

__all__ = ["PodManager", "PodSpec", "PodState", "netns_name", "now_rfc3339", "status_json"]

log = logging.getLogger("podlab.pods")

# Re-exported for callers (tests, cleanup) that stop a pod's processes by netns.
pids_in_netns = procs.pids_in_netns
stop_pids = procs.stop_pids

Key = tuple[str, str]
BRIDGE = "cni0"


class PodManager:
    """Creates, checks and removes this node's pods; see the module docstring."""

    def __init__(
        self,
        cfg: AgentConfig,
        ipr: IPRoute,
        subnet: ipaddress.IPv4Network,
        mtu: int,
        style: PodInterface,
        on_ready: Callable[[Key, PodState], None] | None = None,
    ) -> None:
        self.cfg, self.ipr, self.subnet, self.mtu, self.style = cfg, ipr, subnet, mtu, style
        self.cni = podcni.PodNetworking(cfg, style, mtu)
        self.on_ready = on_ready
        self.state_dir = cfg.state_dir / "pods"
        self.log_dir = cfg.log_dir / "pods"
        self.cgroups = cgroups.Cgroups(cgroups.node_tag(cfg.cluster, cfg.node))
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._ok: dict[Key, str] = {}  # pods verified since the last full pass
        self._lock = threading.Lock()  # _children and _ok, shared with the workers
        self._pool = ThreadPoolExecutor(cfg.pod_workers, thread_name_prefix="pod")
        self.resolvers = dns.ResolverMounts(cfg.run_dir)
        self.exits = supervise.ExitWatcher()  # its on_exit wakes the agent's loop
        self.backoff = supervise.CrashLoop()

    def prepare(self) -> None:
        self.cgroups.prepare()
        if self.style == PodInterface.BRIDGED:
            self._bridge_netfilter()
        else:  # a cni0 left by a Flannel-family mode
            idx = nl.ifindex(self.ipr, BRIDGE)
            if idx is not None and _is_bridge(self.ipr, idx):
                log.info("removing %s: the pod interface style is now %s", BRIDGE, self.style.value)
                self.ipr.link("del", index=idx)
        for d in (self.state_dir, self.log_dir, self.cfg.netns_dir):
            d.mkdir(parents=True, exist_ok=True)
        nsutil.share_dir(self.cfg.netns_dir)
        self.resolvers.prepare()
        self.cni.install()

    def _bridge_netfilter(self) -> None:
        """Hand ``cni0``'s bridged frames to the IP hooks, as kubeadm's preflight demands.

        Two pods on one bridge talk at layer 2; without ``br_netfilter`` their frames
        never pass ``forward``, so a policy between them is not enforced, and a reply
        from a backend to a client on the same node bypasses the proxy's reverse
        translation (IPVS answers from the pod's address, the client drops it). This
        host has the module loaded; a Debian guest does not until someone asks.
        """
        if not nl.load_module("br_netfilter"):
            log.warning("br_netfilter cannot be loaded: policy and Services between pods "
                        "on one node's %s are not enforced", BRIDGE)  # fmt: skip
            return
        run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.exits.close()
        self.cni.close()

    # -- persisted state ---------------------------------------------------------
    def _path(self, namespace: str, name: str) -> Path:
        return self.state_dir / f"{namespace}_{name}.json"

    def load_all(self) -> dict[Key, PodState]:
        out: dict[Key, PodState] = {}
        for p in sorted(self.state_dir.glob("*.json")):
            try:
                st = PodState(**json.loads(p.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.error("ignoring unreadable pod state %s: %s", p, exc)
                continue
            out[(st.namespace, st.name)] = st
        return out

    def save(self, st: PodState) -> None:
        atomic_write(self._path(st.namespace, st.name), json.dumps(asdict(st), indent=1))

    # -- reconcile -------------------------------------------------------------------
    def sync(self, desired: dict[Key, PodSpec], full: bool = True) -> dict[Key, PodState]:
        """Make this node's pods exactly ``desired``; returns every pod's state.

        A ``full`` pass re-checks every pod (netns, attachment, process) and
        collects garbage; a quick pass (on a watch event) only handles pods that
        are new or changed, so applying the 100th pod does not re-inspect the
        other 99.
        """
        exited = self._reap() | self.exits.take_exited()  # adopted ones too
        if full:
            with self._lock:
                self._ok.clear()
        states = self.load_all()
        stale = [
            st
            for key, st in states.items()
            if (spec := desired.get(key)) is None or (spec.uid and st.uid and spec.uid != st.uid)
        ]
        self._each(self.remove, stale)
        for st in stale:
            del states[(st.namespace, st.name)]
            with self._lock:
                self._ok.pop((st.namespace, st.name), None)
        if full:
            self._remove_orphans(states)
        # processes by netns, read once for all the pods being stopped in this pass
        stopping = procs.pids_by_netns() if any(s.terminating for s in desired.values()) else {}
        todo: list[tuple[Key, PodSpec, PodState]] = []
        for key, spec in desired.items():
            known = states.get(key)
            if spec.terminating:
                if known is not None and self._terminate(spec, known, stopping):
                    del states[key]
                with self._lock:
                    self._ok.pop(key, None)
                continue
            if known is None:
                ns, name = key
                cid = podcni.container_id(ns, name, spec.uid)
                st = PodState(ns, name, spec.uid, "", netns_name(*key), "", container_id=cid)
                self.save(st)  # ours before its namespace exists: a crash leaves a trace
            else:
                st = known
            states[key] = st
            with self._lock:
                ok = self._ok.get(key) == spec.uid
            settled = st.pid not in exited and not self.backoff.waiting(key)
            if not ok or not settled:
                todo.append((key, spec, st))
        links_now = self._host_links() if full and todo else None
        # pods that had an address first: a re-attach frees and re-takes it (DEL, ADD)
        for batch in ([t for t in todo if t[2].ip], [t for t in todo if not t[2].ip]):
            self._each(lambda t: self._start(t[0], t[1], t[2], links_now), batch)
        return states

    def _each(self, fn: Callable[..., object], items: list) -> None:  # type: ignore[type-arg]
        """Run ``fn`` on every item in the pool and wait for all (one item: inline)."""
        if len(items) == 1:
            fn(items[0])
            return
        for fut in wait([self._pool.submit(fn, it) for it in items]).done:
            fut.result()

    def _host_links(self) -> set[str]:
        """The node's interface names: libc's ``if_nameindex`` (names only, in C) rather
        than a pyroute2 dump that decodes every attribute of every link in Python while
        holding the interpreter the pod workers need (a full pass with a burst of pods
        spent more time here than in the pods' own set-up; the agent's own namespace:
        this thread never leaves it)."""
        return {name for _, name in socket.if_nameindex()}

    def _start(self, key: Key, spec: PodSpec, st: PodState, links_now: set[str] | None) -> None:
        """One pod's set-up (a worker thread); its status goes out as soon as it is done."""
        try:
            self._ensure(spec, st, links_now)
            with self._lock:
                self._ok[key] = spec.uid
        except Exception as exc:  # one broken pod must not stop the others
            log.exception("pod %s/%s: setup failed", spec.namespace, spec.name)
            st.phase, st.message = "Failed", f"network setup failed: {exc}"
            self.save(st)
        if self.on_ready is not None:
            try:
                self.on_ready(key, st)
            except Exception:
                log.exception("pod %s/%s: publishing its status failed", *key)

    def _ensure(self, spec: PodSpec, st: PodState, links_now: set[str] | None) -> None:
        path = str(self.cfg.netns_dir / st.netns)
        fresh = not nsutil.is_netns(path)
        if fresh:
            if os.path.exists(path):  # a handle file whose bind mount a crash cut short
                log.warning(
                    "pod %s/%s: %s is no namespace; recreating it", spec.namespace, spec.name, path
                )
                nsutil.remove(path)
            nsutil.create(path, lo_up=True)  # loopback is the runtime's job, as in podman
        if not st.container_id:  # state written before the CNI runtime existed
            st.container_id = podcni.container_id(st.namespace, st.name, st.uid)
        cached = self.cni.cached(st.container_id)
        why = ""
        if cached is None:
            why = "" if fresh and not st.ip and not st.attaching else "not attached"
            first = not why
            why = why or "new"
        elif fresh:
            why, first = "its namespace was gone", False
        elif not self.cni.current(cached):
            why, first = "the interface style or MTU changed", False
        elif links_now is not None and st.host_if and st.host_if not in links_now:
            why, first = f"veth {st.host_if} missing", False
        elif st.attaching or not st.ip:
            # the ADD finished (the runtime cached it) but a crash cut our own
            # bookkeeping short: the cache is the record of a completed attachment
            log.warning("pod %s/%s: adopting its cached attachment", st.namespace, st.name)
            self._attached(st, cached.result)
        if why:
            self._attach(st, path, first, why)
        self._process(spec, st, path)

    def _attach(self, st: PodState, path: str, first: bool, why: str) -> None:
        """ADD (after a DEL of whatever an earlier attachment left, unless ``first``)."""
        want = st.ip if st.ip and ipaddress.IPv4Address(st.ip) in self.subnet else ""
        att = self.cni.attachment(st.container_id, path, st.namespace, st.name, want)
        if not first:
            log.warning("pod %s/%s: re-attaching (%s)", st.namespace, st.name, why)
            self.cni.delete(att)
        st.attaching = True
        self.save(st)
        self._attached(st, self.cni.add(att))

    def _attached(self, st: PodState, result: dict[str, object]) -> None:
        """Record an ADD's result: the pod's address, its veth, network-ready now."""
        st.ip, st.host_if = podcni.result_address(result), podcni.result_host_if(result)
        st.mtu, st.attaching = self.mtu, False
        st.network_ready_time = now_rfc3339()
        if st.phase == "Failed" and st.message.startswith("network setup failed"):
            st.phase, st.message = "Pending", ""
        self.save(st)
        log.info("pod %s/%s: attached %s on %s, MTU %d", st.namespace, st.name, st.ip,
                 st.host_if, st.mtu)  # fmt: skip

    def _running(self, pid: int, path: str) -> bool:
        """Our own child: ask waitpid (a child that has not entered the pod netns yet is
        still running). Started by an earlier agent run: alive in the pod's netns."""
        with self._lock:
            child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        return procs.alive_in(pid, path)

    def _process(self, spec: PodSpec, st: PodState, path: str) -> None:
        key = (st.namespace, st.name)
        if st.pid and self._running(st.pid, path):
            self._watch(st.pid, path)  # ours or adopted: learn of its exit at once
            return
        if st.pid:  # it ran and is gone
            if not self._exited(spec, st, path):
                return
        elif st.phase == "Running" and not self.backoff.waiting(key):
            self.backoff.exited(key)  # it was waiting to restart when the agent restarted
        elif st.phase != "Pending" and not self.backoff.waiting(key):
            return
        if (delay := self.backoff.remaining(key)) > 0:
            st.message = f"back-off {delay:.0f}s restarting failed container (CrashLoopBackOff)"
            self.save(st)
            self.exits.wake_in(delay)
            return
        if self.backoff.waiting(key):
            self.backoff.restarted(key)
            st.restart_count += 1
            code = st.exit_code
            what = f"status {code}" if code is not None else "an unknown status (agent was down)"
            st.message = f"restarted after the command exited with {what}"
        env = {
            "POD_NAME": st.name,
            "POD_NAMESPACE": st.namespace,
            "POD_IP": st.ip,
            "NODE_NAME": self.cfg.node,
        }
        logf = self.log_dir / f"{st.namespace}_{st.name}.log"
        # cluster DNS for the pod: its namespace's resolv.conf, in a mount ns it enters
        joins = self.cgroups.ensure(st.namespace, st.name, spec.limits)
        argv, mntns = self.resolvers.command(
            st.namespace, dns.dns_ip(str(self.cfg.service_cidr)),
            cgroups.wrap(joins, list(spec.command)),
        )  # fmt: skip
        proc = procs.start(argv, path, env, logf, mount_ns=str(mntns) if mntns else None)
        with self._lock:
            self._children[proc.pid] = proc
        self._watch(proc.pid)
        st.pid, st.phase, st.start_time = proc.pid, "Running", st.start_time or now_rfc3339()
        self.save(st)
        log.info("pod %s/%s: %s on %s, pid %d", st.namespace, st.name, st.ip, st.host_if, proc.pid)

    def _why_it_ended(self, st: PodState, code: int | None) -> None:
        """OOMKilled when the pod's cgroup counted a new OOM kill, as the kubelet
        reports it (exit code 137); else Completed or Error."""
        usage = self.cgroups.usage(st.namespace, st.name)
        if usage is not None and usage.oom_kills > st.oom_kills:
            st.last_reason, st.oom_kills = "OOMKilled", usage.oom_kills
            log.warning("pod %s/%s: OOMKilled (memory limit)", st.namespace, st.name)
        else:
            st.last_reason = "Completed" if code == 0 else "Error"
        st.finished_at = now_rfc3339()

    def _watch(self, pid: int, path: str | None = None) -> None:
        if self.cfg.pod_exit_watch:  # off: the exit is found by the next full pass
            self.exits.watch(pid, path)

    def _exited(self, spec: PodSpec, st: PodState, path: str) -> bool:
        """The pod's command is gone: not Ready at once; its other processes go too (a
        container's do, with its pid namespace); True when it is to be restarted."""
        code = self._exit_code(st.pid)
        self._why_it_ended(st, code)
        if st.ready:
            st.ready_time = now_rfc3339()
        st.pid, st.exit_code, st.ready = 0, code, False
        failed = code != 0  # unknown (exited while no agent watched) counts as failed
        again = spec.restart_policy == "Always" or (spec.restart_policy == "OnFailure" and failed)
        what = f"status {code}" if code is not None else "an unknown status (agent was down)"
        log.info("pod %s/%s: command exited with %s", st.namespace, st.name, what)
        procs.stop_pids(procs.pids_in_netns(path), grace=0.0)
        st.message = f"command exited with {what}"
        if not again:
            st.phase = "Failed" if failed else "Succeeded"
            self.save(st)
            return False
        self.backoff.exited((st.namespace, st.name))
        return True

    def _exit_code(self, pid: int) -> int | None:
        with self._lock:
            proc = self._children.pop(pid, None)
        return proc.poll() if proc is not None else None

    def _reap(self) -> set[int]:
        """Collect exit statuses of pod commands we started; returns pids that exited."""
        with self._lock:
            return {pid for pid, proc in self._children.items() if proc.poll() is not None}

    def check_ready(self, spec: PodSpec, st: PodState) -> bool:
        """Run the pod's readiness probe (no probe: ready while Running); True if changed.

        A Ready pod becomes not Ready after ``failureThreshold`` consecutive failed
        probes (Kubernetes' rule; the agent re-probes a failing pod within a
        second, not every ``periodSeconds``), so one probe lost on a loaded node
        does not take a serving pod out of its Services.
        """
        live = st.phase == "Running" and st.pid != 0 and not spec.terminating  # 0: back-off
        ready = live and (spec.readiness is None or procs.probe(spec.readiness, st.ip))
        if live and st.ready and not ready and spec.readiness is not None:
            st.probe_failures += 1
            self.save(st)
            if st.probe_failures < spec.readiness.failure_threshold:
                return False
        elif ready and st.probe_failures:
            st.probe_failures = 0
            self.save(st)
        if ready == st.ready:
            return False
        log.info("pod %s/%s: %s", st.namespace, st.name, "Ready" if ready else "not Ready")
        st.ready, st.probe_failures, st.ready_time = ready, 0, now_rfc3339()
        self.save(st)
        return True

    # -- graceful termination ------------------------------------------------------
    def _terminate(
        self, spec: PodSpec, st: PodState, by_netns: dict[tuple[int, int], list[int]]
    ) -> bool:
        """One step of the kubelet's graceful stop; True once the pod is removed.

        Not Ready at once (its Services dropped it already: the object is
        terminating); the preStop sleep, so the proxies on every node are
        reprogrammed before the process is told to stop; SIGTERM; SIGKILL when
        the grace period (which includes the preStop sleep) is over. Called on
        every pass while the pod terminates; never blocks.
        """
        grace = spec.grace_s or 0
        now = time.time()
        if not st.terminating_since:
            if st.ready:
                st.ready_time = now_rfc3339()
            st.terminating_since, st.ready = now, False
            st.message = f"terminating (grace period {grace}s)"
            self.save(st)
            log.info(
                "pod %s/%s: terminating (preStop sleep %ds, grace period %ds)",
                st.namespace, st.name, min(spec.pre_stop_s, grace), grace,
            )  # fmt: skip
        path = str(self.cfg.netns_dir / st.netns)
        alive = (
            [p for p in procs.pids_in_netns(path, by_netns) if procs.exists(p)]
            if os.path.exists(path)
            else []
        )
        with self._lock:
            child = self._children.get(st.pid)
        if child is not None and child.poll() is None:
            alive.append(st.pid)  # not yet inside the pod netns
        over = now >= st.terminating_since + grace
        if alive and not over:
            if now < st.terminating_since + min(spec.pre_stop_s, grace):
                return False
            if not st.sigterm_sent:
                for pid in sorted(set(alive)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                st.sigterm_sent = True
                self.save(st)
            return False
        self.remove(st, grace_s=0.0 if over else procs.STOP_GRACE_S)
        return True

    # -- removal ----------------------------------------------------------------------
    def _remove_orphans(self, states: dict[Key, PodState]) -> None:
        """What no state file accounts for (state_dir wiped, a crash between steps).

        Pod namespaces: processes stopped, namespace removed. Attachments: the
        CNI runtime's GC (DEL for every cached attachment of a pod not in
        ``states``, then the plugin's GC, which frees addresses and veths no
        valid attachment holds). Veths without an owner alias (made before the
        CNI plugin, or by an ADD cut short) that no pod and no reservation
        names: deleted (an ADD in flight has reserved its address first).
        """
        netns_names = {st.netns for st in states.values()}
        for f in sorted(self.cfg.netns_dir.glob("pod-*")):
            if f.name not in netns_names:
                log.warning("removing orphaned pod netns %s", f)
                procs.stop_pids(procs.pids_in_netns(str(f)))
                with contextlib.suppress(OSError):
                    nsutil.remove(str(f))
        valid = [
            self.cni.attachment(st.container_id, str(self.cfg.netns_dir / st.netns), *key)
            for key, st in states.items()
            if st.container_id
        ]
        for problem in self.cni.gc(valid):
            log.error("CNI GC: %s", problem)
        host_ifs = {st.host_if for st in states.values()}
        bridge = nl.ifindex(self.ipr, BRIDGE)
        found = self.ipr.get_links()
        # a veth an ADD (of any runtime on the node) is making has no alias yet, but
        # its address is reserved first, naming it: read after listing, so it is seen
        data = self.cfg.state_dir / "cni"
        host_ifs |= {
            r.host_if for d in ipam.pools(data) for r in ipam.pool_from_dir(data, d).reservations()
        }
        for msg in found:
            name = str(nl.attr(msg, "IFLA_IFNAME", ""))
            ours = name.startswith("cali") or (
                name.startswith("veth")
                and bridge is not None
                and nl.attr(msg, "IFLA_MASTER") == bridge
            )
            alias = links.parse_alias(str(nl.attr(msg, "IFLA_IFALIAS", "")))
            if ours and name not in host_ifs and alias is None:
                log.warning("removing orphaned pod veth %s", name)
                nl.ignore_missing(partial(self.ipr.link, "del", index=msg["index"]))

    def remove(self, st: PodState, grace_s: float = procs.STOP_GRACE_S) -> None:
        """Stop the pod's processes (by pid; SIGKILL after ``grace_s``), DEL its
        attachment (which frees its address), remove its netns and state."""
        path = str(self.cfg.netns_dir / st.netns)
        pids = set(procs.pids_in_netns(path)) if os.path.exists(path) else set()
        with self._lock:
            child = self._children.get(st.pid)
        if child is not None:  # our unreaped child: its pid cannot be recycled,
            pids.add(st.pid)  # and it may not have entered the pod netns yet
        procs.stop_pids(sorted(pids), grace_s)
        with self._lock:
            mine = {pid: self._children[pid] for pid in pids if pid in self._children}
        for proc in mine.values():
            # a killed multi-threaded child shows as a zombie a moment before waitpid
            # can collect it: wait for it, so no zombie outlives the pod
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=procs.STOP_GRACE_S)
        for pid in self._reap():
            with self._lock:
                self._children.pop(pid, None)
        cid = st.container_id or podcni.container_id(st.namespace, st.name, st.uid)
        netns_now = path if os.path.exists(path) else ""
        try:
            self.cni.delete(self.cni.attachment(cid, netns_now, st.namespace, st.name))
        except (PluginError, OSError) as exc:  # GC frees it later; the pod goes anyway
            log.error("pod %s/%s: CNI DEL failed: %s", st.namespace, st.name, exc)
        if netns_now:
            try:
                nsutil.remove(path)
            except OSError as exc:
                log.error("pod %s/%s: cannot remove netns %s: %s", st.namespace, st.name, path, exc)
        self.cgroups.remove(st.namespace, st.name)
        self._path(st.namespace, st.name).unlink(missing_ok=True)
        self.backoff.forget((st.namespace, st.name))
        log.info("pod %s/%s removed (address %s released)", st.namespace, st.name, st.ip)


def _is_bridge(ipr: IPRoute, idx: int) -> bool:
    info = nl.attr(ipr.get_links(idx)[0], "IFLA_LINKINFO")
    return info is not None and info.get_attr("IFLA_INFO_KIND") == "bridge"
