"""Pods on this node: a named netns, a veth to the node, an address, a process.

For every pod whose ``spec.nodeName`` is this node the agent keeps: a network
namespace bind-mounted at ``<netns_dir>/<netns>`` (the node's private
``/run/netns`` by default, so ``ip netns exec`` works on the node), a veth whose
node end attaches as the mode family's pod interface style says (podnet.py), an
address from the node subnet (the allocation lives in ``state_dir/pods/`` so a
restart never reassigns it), and the pod's command
(``containers[0].command + args``; ``sleep infinity`` if empty) started detached
with its output in ``log_dir/pods/<ns>_<name>.log`` (procs.py) — so killing the
agent leaves the pod running. ``restartPolicy`` (Always, the default; OnFailure;
Never) decides whether an exited command is started again (on the next full
pass, which doubles as a back-off) or reported as Succeeded/Failed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns

from harness.agent import dns, procs
from harness.agent import netlink as nl
from harness.agent.config import AgentConfig
from harness.agent.datapath.base import PodInterface
from harness.agent.leases import atomic_write
from harness.agent.podnet import POD_INTERFACES

log = logging.getLogger("podlab.pods")

# Re-exported for callers (tests, cleanup) that stop a pod's processes by netns.
pids_in_netns = procs.pids_in_netns
stop_pids = procs.stop_pids


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class PodSpec:
    """The part of a Pod object the agent acts on."""

    namespace: str
    name: str
    uid: str
    command: tuple[str, ...]
    restart_policy: str = "Always"
    readiness: procs.Probe | None = None
    container: str = "main"
    grace_s: int | None = None  # set once the pod is being deleted (graceful delete)
    pre_stop_s: int = 0  # lifecycle.preStop.sleep.seconds

    @property
    def terminating(self) -> bool:
        return self.grace_s is not None

    @staticmethod
    def from_object(obj: dict[str, Any]) -> PodSpec:
        meta, spec = obj.get("metadata", {}), obj.get("spec", {})
        c = (spec.get("containers") or [{}])[0]
        argv = [*(c.get("command") or []), *(c.get("args") or [])]
        grace = meta.get("deletionGracePeriodSeconds") if meta.get("deletionTimestamp") else None
        pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
        return PodSpec(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta["name"]),
            uid=str(meta.get("uid") or ""),
            command=tuple(str(a) for a in argv) or ("sleep", "infinity"),
            restart_policy=str(spec.get("restartPolicy") or "Always"),
            readiness=_probe(c),
            container=str(c.get("name") or "main"),
            grace_s=None if grace is None else int(grace),
            pre_stop_s=int(pre_stop.get("seconds") or 0),
        )


def _probe(container: dict[str, Any]) -> procs.Probe | None:
    """readinessProbe → Probe; a named port is looked up in the container's ports."""
    rp = container.get("readinessProbe") or {}
    kind, body = ("tcp", rp.get("tcpSocket")) if "tcpSocket" in rp else ("http", rp.get("httpGet"))
    if not body:
        return None
    port = body.get("port")
    if isinstance(port, str):
        named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        port = named.get(port)
    if not isinstance(port, int):
        return None
    threshold = int(rp.get("failureThreshold") or 3)
    return procs.Probe(kind, port, str(body.get("path") or "/"), threshold)


@dataclass
class PodState:
    """What the agent made for one pod; persisted so restarts reuse it."""

    namespace: str
    name: str
    uid: str
    ip: str
    netns: str
    host_if: str
    pid: int = 0
    start_time: str = ""
    network_ready_time: str = ""
    phase: str = "Pending"
    message: str = ""
    exit_code: int | None = None
    restart_count: int = 0
    ready: bool = False
    probe_failures: int = 0  # consecutive failed probes of a Ready pod
    terminating_since: float = 0.0  # wall clock (survives an agent restart)
    sigterm_sent: bool = False
    mtu: int = 0  # of the pod's veth, as last set (0: written before MTU was kept)


def netns_name(namespace: str, name: str) -> str:
    """The pod's netns name on its node (``ip netns exec <it>``), deterministic."""
    return f"pod-{namespace}-{name}"


class PodManager:
    """Creates, checks and removes this node's pods; see the module docstring."""

    def __init__(
        self,
        cfg: AgentConfig,
        ipr: IPRoute,
        subnet: ipaddress.IPv4Network,
        mtu: int,
        style: PodInterface,
    ) -> None:
        if style not in POD_INTERFACES:
            raise NotImplementedError(f"pod interface style {style.value} not implemented yet")
        self.cfg, self.ipr, self.subnet, self.mtu = cfg, ipr, subnet, mtu
        self.gateway = ipaddress.IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")
        self.iface = POD_INTERFACES[style](ipr)  # type: ignore[call-arg]
        self.state_dir = cfg.state_dir / "pods"
        self.log_dir = cfg.log_dir / "pods"
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._ok: dict[tuple[str, str], str] = {}  # pods verified since the last full pass

    def prepare(self) -> None:
        # The other style's node-wide objects (cni0) went at start-up (retire.py);
        # each pod is re-plumbed in this style by _ensure.
        self.iface.prepare(self.gateway, self.mtu)
        for d in (self.state_dir, self.log_dir, self.cfg.netns_dir):
            d.mkdir(parents=True, exist_ok=True)

    # -- persisted state ---------------------------------------------------------
    def _path(self, namespace: str, name: str) -> Path:
        return self.state_dir / f"{namespace}_{name}.json"

    def load_all(self) -> dict[tuple[str, str], PodState]:
        out: dict[tuple[str, str], PodState] = {}
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

    def _allocate(self, used: set[str]) -> str:
        for host in self.subnet.hosts():
            if host != self.gateway.ip and str(host) not in used:
                return str(host)
        raise RuntimeError(f"subnet {self.subnet} has no free pod address")

    # -- reconcile -------------------------------------------------------------------
    def sync(
        self, desired: dict[tuple[str, str], PodSpec], full: bool = True
    ) -> dict[tuple[str, str], PodState]:
        """Make this node's pods exactly ``desired``; returns every pod's state.

        A ``full`` pass re-checks every pod (netns, veth, bridge port, process); a
        quick pass (on a watch event) only handles pods that are new or changed,
        so applying the 100th pod does not re-inspect the other 99.
        """
        exited = self._reap()
        if full:
            self._ok.clear()
        states = self.load_all()
        for key, st in list(states.items()):
            spec = desired.get(key)
            if spec is None or (spec.uid and st.uid and spec.uid != st.uid):
                self.remove(st)
                del states[key]
                self._ok.pop(key, None)
        if full:
            self._remove_orphans(states)
        used = {st.ip for st in states.values()}
        # processes by netns, read once for all the pods being stopped in this pass
        stopping = procs.pids_by_netns() if any(s.terminating for s in desired.values()) else {}
        for key, spec in desired.items():
            known = states.get(key)
            if spec.terminating:
                if known is not None and self._terminate(spec, known, stopping):
                    del states[key]
                self._ok.pop(key, None)
                continue
            if known is not None:
                st = known
            else:
                ns, host_if = netns_name(*key), self.iface.host_if_name(*key)
                ip = self._allocate(used)
                st = PodState(spec.namespace, spec.name, spec.uid, ip, ns, host_if)
                used.add(st.ip)
                self.save(st)  # the address is ours before any interface exists
            states[key] = st
            if self._ok.get(key) == spec.uid and st.pid not in exited:
                continue
            try:
                self._ensure(spec, st)
                self._ok[key] = spec.uid
            except Exception as exc:  # one broken pod must not stop the others
                log.exception("pod %s/%s: setup failed", spec.namespace, spec.name)
                st.phase, st.message = "Failed", f"network setup failed: {exc}"
                self.save(st)
        return states

    def _ensure(self, spec: PodSpec, st: PodState) -> None:
        path = str(self.cfg.netns_dir / st.netns)
        if os.path.exists(path) and not _is_netns(path):
            # a placeholder whose mount never happened (the creating helper was
            # killed): not a namespace, so start this pod's netns over
            log.warning("pod %s/%s: %s is not a mounted netns; recreating", st.namespace,
                        st.name, path)  # fmt: skip
            os.unlink(path)
        fresh = not os.path.exists(path)
        if fresh:
            netns.create(path)
        wanted = self.iface.host_if_name(st.namespace, st.name)
        restyle = st.host_if != wanted
        if restyle:
            # The mode changed family under a running pod (bridged cni0 <-> routed
            # cali*): give it the new style's veth; its netns, address and process
            # stay, so its connections resume once the new path is up.
            log.warning(
                "pod %s/%s: pod interface style changed; re-plumbing %s as %s",
                st.namespace, st.name, st.host_if, wanted,
            )  # fmt: skip
            nl.ignore_missing(partial(self.ipr.link, "del", ifname=st.host_if))
            st.host_if = wanted
        plumbed = False
        if fresh or restyle or nl.ifindex(self.ipr, st.host_if) is None:
            if not (fresh or restyle):
                log.warning(
                    "pod %s/%s: veth %s missing; re-plumbing", st.namespace, st.name, st.host_if
                )
            self._plumb(path, st)
            st.network_ready_time = now_rfc3339()
            self.save(st)
            plumbed = True
        elif st.mtu != self.mtu:  # same family, new overhead (e.g. host-gw -> vxlan)
            self._set_mtu(path, st)
        self.iface.attach(st.host_if, st.ip)
        if plumbed:
            # its address may be one a deleted pod had: tell the neighbours its MAC
            self.iface.announce(path, st.ip)
        self._process(spec, st, path)

    def _set_mtu(self, path: str, st: PodState) -> None:
        """Both ends of the pod's veth to the mode's MTU (the pod's routes stay)."""
        log.info("pod %s/%s: MTU %d -> %d", st.namespace, st.name, st.mtu, self.mtu)
        self.ipr.link("set", ifname=st.host_if, mtu=self.mtu)
        with IPRoute(netns=path) as pod:
            pod.link("set", index=pod.link_lookup(ifname="eth0")[0], mtu=self.mtu)
        st.mtu = self.mtu
        self.save(st)

    def _plumb(self, path: str, st: PodState) -> None:
        """veth pair (the pod end created directly in the pod netns), then the pod side."""
        with IPRoute(netns=path) as pod:
            for idx in pod.link_lookup(ifname="eth0"):
                pod.link("del", index=idx)
        nl.ignore_missing(lambda: self.ipr.link("del", ifname=st.host_if))
        peer = {"ifname": "eth0", "net_ns_fd": path, "mtu": self.mtu}
        self.ipr.link("add", ifname=st.host_if, kind="veth", mtu=self.mtu, peer=peer)
        host_mac = str(nl.attr(nl.link(self.ipr, st.host_if), "IFLA_ADDRESS"))
        with IPRoute(netns=path) as pod:
            pod.link("set", index=pod.link_lookup(ifname="lo")[0], state="up")
            eth0 = pod.link_lookup(ifname="eth0")[0]
            self.iface.plumb_pod(pod, eth0, st.ip, self.gateway, self.mtu, host_mac)
        st.mtu = self.mtu

    def _running(self, pid: int, path: str) -> bool:
        """Our own child: ask waitpid (a child that has not entered the pod netns yet is
        still running). Started by an earlier agent run: alive in the pod's netns."""
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        return procs.alive_in(pid, path)

    def _process(self, spec: PodSpec, st: PodState, path: str) -> None:
        if st.pid and self._running(st.pid, path):
            return
        if st.pid:  # it ran and is gone
            code = self._exit_code(st.pid)
            st.pid, st.exit_code, st.ready = 0, code, False
            failed = code != 0  # unknown (exited while no agent watched) counts as failed
            again = spec.restart_policy == "Always" or (
                spec.restart_policy == "OnFailure" and failed
            )
            what = f"status {code}" if code is not None else "an unknown status (agent was down)"
            if not again:
                st.phase = "Failed" if failed else "Succeeded"
                st.message = f"command exited with {what}"
                self.save(st)
                return
            st.restart_count += 1
            st.message = f"restarted after the command exited with {what}"
        elif st.phase != "Pending":
            return
        env = {
            "POD_NAME": st.name,
            "POD_NAMESPACE": st.namespace,
            "POD_IP": st.ip,
            "NODE_NAME": self.cfg.node,
        }
        logf = self.log_dir / f"{st.namespace}_{st.name}.log"
        # cluster DNS for the pod: its own resolv.conf, bind-mounted by the wrapper
        files = self.cfg.run_dir / "pods" / f"{st.namespace}_{st.name}"
        dns.write_pod_files(files, st.namespace, dns.dns_ip(str(self.cfg.service_cidr)))
        proc = procs.start(dns.wrap_command(files, list(spec.command)), path, env, logf)
        self._children[proc.pid] = proc
        st.pid, st.phase, st.start_time = proc.pid, "Running", st.start_time or now_rfc3339()
        self.save(st)
        log.info("pod %s/%s: %s on %s, pid %d", st.namespace, st.name, st.ip, st.host_if, proc.pid)

    def _exit_code(self, pid: int) -> int | None:
        proc = self._children.pop(pid, None)
        return proc.poll() if proc is not None else None

    def _reap(self) -> set[int]:
        """Collect exit statuses of pod commands we started; returns pids that exited."""
        return {pid for pid, proc in self._children.items() if proc.poll() is not None}

    def check_ready(self, spec: PodSpec, st: PodState) -> bool:
        """Run the pod's readiness probe (no probe: ready while Running); True if changed.

        A Ready pod becomes not Ready after ``failureThreshold`` consecutive failed
        probes (Kubernetes' rule; the agent re-probes a failing pod within a
        second, not every ``periodSeconds``), so one probe lost on a loaded node
        does not take a serving pod out of its Services.
        """
        live = st.phase == "Running" and not spec.terminating
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
        st.ready, st.probe_failures = ready, 0
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
        if st.pid in self._children and self._children[st.pid].poll() is None:
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
    def _remove_orphans(self, states: dict[tuple[str, str], PodState]) -> None:
        """Pod netns and cni0 ports that no state file accounts for (state_dir wiped,
        a crash between creating and recording): stop, unplug, remove."""
        netns_names = {st.netns for st in states.values()}
        for f in sorted(self.cfg.netns_dir.glob("pod-*")):
            if f.name not in netns_names:
                log.warning("removing orphaned pod netns %s", f)
                procs.stop_pids(procs.pids_in_netns(str(f)))
                with contextlib.suppress(OSError):
                    netns.remove(str(f))
        host_ifs = {st.host_if for st in states.values()}
        ports = {n for style in POD_INTERFACES.values() for n in style(self.ipr).ports()}  # type: ignore[call-arg]
        for name in sorted(ports):
            if name not in host_ifs:
                log.warning("removing orphaned pod veth %s", name)
                nl.ignore_missing(partial(self.ipr.link, "del", ifname=name))

    def remove(self, st: PodState, grace_s: float = procs.STOP_GRACE_S) -> None:
        """Stop the pod's processes (by pid; SIGKILL after ``grace_s``), remove its
        interfaces, netns and address."""
        path = str(self.cfg.netns_dir / st.netns)
        pids = set(procs.pids_in_netns(path)) if os.path.exists(path) else set()
        if st.pid in self._children:  # our unreaped child: its pid cannot be recycled,
            pids.add(st.pid)  # and it may not have entered the pod netns yet
        procs.stop_pids(sorted(pids), grace_s)
        for pid in pids & set(self._children):
            # a killed multi-threaded child shows as a zombie a moment before waitpid
            # can collect it: wait for it, so no zombie outlives the pod
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._children[pid].wait(timeout=procs.STOP_GRACE_S)
        for pid in self._reap():
            self._children.pop(pid, None)
        self.iface.detach(st.host_if, st.ip)
        nl.ignore_missing(lambda: self.ipr.link("del", ifname=st.host_if))
        if os.path.exists(path):
            try:
                netns.remove(path)
            except OSError as exc:
                log.error("pod %s/%s: cannot remove netns %s: %s", st.namespace, st.name, path, exc)
        self._path(st.namespace, st.name).unlink(missing_ok=True)
        log.info("pod %s/%s removed (address %s released)", st.namespace, st.name, st.ip)


def status_json(st: PodState, host_ip: str, container: str = "main") -> dict[str, Any]:
    """The ``podstatus/<ns>/<name>`` record (Kubernetes PodStatus field names)."""
    ready = "True" if st.phase == "Running" and st.ready else "False"
    net = "True" if st.network_ready_time else "False"
    return {
        "uid": st.uid,
        "phase": st.phase,
        "podIP": st.ip,
        "podIPs": [{"ip": st.ip}],
        "hostIP": host_ip,
        "netns": st.netns,
        "startTime": st.start_time or None,
        "networkReadyTime": st.network_ready_time or None,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {
                "type": "NetworkReady",
                "status": net,
                "lastTransitionTime": st.network_ready_time or None,
            },
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ],
        "containerStatuses": [
            {
                "name": container,
                "ready": ready == "True",
                "restartCount": st.restart_count,
                "started": st.phase == "Running",
                "lastExitCode": st.exit_code,
            }
        ],
        "message": st.message,
    }


def _is_netns(path: str) -> bool:
    """True if ``path`` is a bind-mounted network namespace (nsfs), not a plain file."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False
