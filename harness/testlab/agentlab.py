"""A throwaway lab for agent kernel tests: node namespaces on one bridge, plus etcd.

Layout (every name carries ``podlab-t-agent`` and a per-run tag so parallel runs
and other engineers' labs never collide):

    netns <tag>-fab : bridge br0 (segment "fabric"), bridge br1 = 10.198.0.254/24
                      (segment "edge"), forwarding between them; etcd on
                      10.199.0.254:2379 (via veth fab-e)
    netns <tag>-nX  : eth1 = 10.199.0.X/24 (veth into br0) or 10.198.0.X/24 (br1),
                      a route to the other segment; the agent runs here

Agents run as ``nsenter --net=/run/netns/<node> python -m harness.agent.main``
(root mount namespace, so pod netns bind mounts under the node's private
``netns_dir`` stay visible across agent restarts, as a node's own /run would).
Everything is removed by ``close()``: agents, the daemons they leave running
(BIRD, wireguard-go) and pod processes by pid, pod netns mounts, node and fabric
namespaces, temp dirs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyroute2 import IPRoute, netns

import harness
from harness.agent.pods import pids_in_netns, stop_pids
from harness.agent.wireguard import PIDFILE as WG_PIDFILE
from harness.agent.wireguard import SOCKET_DIR as WG_SOCKETS
from harness.agent.wireguard import iface_name as wg_iface_name
from harness.exec import run
from harness.store import Store
from harness.store.keys import node_key, pod_key, podstatus_key
from harness.testlab.wait import wait_for

NET = "10.199.0"
ETCD_IP = f"{NET}.254"  # the fabric namespace: etcd, and the router between segments
EDGE = "10.198.0"
EDGE_GW = f"{EDGE}.254"
PYTHON = sys.executable
DAEMON_PIDFILES = ("bird.pid", WG_PIDFILE)  # helpers agents leave running, in each run dir
# where ``python -m harness…`` finds the package (the project root of this install)
PROJECT = Path(harness.__file__).resolve().parents[1]


@dataclass
class Node:
    name: str
    ns: str
    ip: str
    dir: Path
    cfg: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    src: Path | None = None  # this node's agent runs from this source tree (A/B benches)
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.dir / "agent.log"

    @property
    def netns_dir(self) -> Path:
        return Path(self.cfg["netns_dir"])

    def pod_netns(self, podns: str) -> str:
        return str(self.netns_dir / podns)


class AgentLab:
    """Build with ``AgentLab(n_nodes)``; always ``close()`` (the fixture does)."""

    def __init__(
        self, n_nodes: int, mode: str, tmp_root: str | None = "/dev/shm", **cfg: Any
    ) -> None:
        self.tag = f"podlab-t-agent-{os.getpid() % 100000}"
        self.tmp = Path(tempfile.mkdtemp(prefix="podlab-t-agent-", dir=tmp_root))
        self.mode = mode
        self.fab = f"{self.tag}-fab"
        self.nodes: list[Node] = []
        self.etcd: subprocess.Popen[bytes] | None = None
        self.agent_src: Path | None = None  # run agents from another source tree (benches)
        self.agent_env: dict[str, str] = {}  # extra environment for agents (benches)
        self._made_ns: list[str] = []
        try:
            self._fabric()
            for i in range(1, n_nodes + 1):
                self.add_node(i, **cfg)
            self._start_etcd()
            port = self._forwarder()
            self.store = Store([f"http://127.0.0.1:{port}"])
            wait_for("etcd", lambda: self.store.get_prefix("/") is not None, timeout=60)
        except BaseException:
            self.close()
            raise

    # -- building ----------------------------------------------------------------
    def _netns(self, name: str) -> None:
        netns.create(name)
        self._made_ns.append(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def _fabric(self) -> None:
        self._netns(self.fab)
        with IPRoute(netns=self.fab) as ipr:
            ipr.link("add", ifname="br0", kind="bridge")
            br = ipr.link_lookup(ifname="br0")[0]
            ipr.link("set", index=br, state="up")
            ipr.link("add", ifname="fab-e", kind="veth", peer="fab-p")
            e, p = ipr.link_lookup(ifname="fab-e")[0], ipr.link_lookup(ifname="fab-p")[0]
            ipr.link("set", index=p, master=br, state="up")
            ipr.addr("add", index=e, address=ETCD_IP, prefixlen=24)
            ipr.link("set", index=e, state="up")
            # a second L2 segment ("edge", 10.198.0.0/24) routed by this namespace
            ipr.link("add", ifname="br1", kind="bridge")
            br1 = ipr.link_lookup(ifname="br1")[0]
            ipr.addr("add", index=br1, address=EDGE_GW, prefixlen=24)
            ipr.link("set", index=br1, state="up")
        run(["nsenter", f"--net=/run/netns/{self.fab}", "sysctl", "-qw", "net.ipv4.ip_forward=1"])

    @staticmethod
    def _port(i: int) -> str:
        """Node ``n<i>``'s veth end in the fabric namespace."""
        return f"p{i}-{os.getpid() % 100000}"

    def add_node(self, i: int, segment: str = "fabric", **cfg: Any) -> Node:
        """Node ``n<i>`` on segment "fabric" (br0, 10.199.0.i) or "edge" (br1,
        10.198.0.i, reaching the fabric through the router namespace)."""
        edge = segment == "edge"
        name, ns = f"n{i}", f"{self.tag}-n{i}"
        ip = f"{EDGE}.{i}" if edge else f"{NET}.{i}"
        self._netns(ns)
        port = self._port(i)
        with IPRoute(netns=self.fab) as fab:
            fab.link("add", ifname=port, kind="veth", peer={"ifname": "eth1", "net_ns_fd": ns})
            idx = fab.link_lookup(ifname=port)[0]
            bridge = fab.link_lookup(ifname="br1" if edge else "br0")[0]
            fab.link("set", index=idx, master=bridge, state="up")
        with IPRoute(netns=ns) as ipr:
            eth1 = ipr.link_lookup(ifname="eth1")[0]
            ipr.addr("add", index=eth1, address=ip, prefixlen=24)
            ipr.link("set", index=eth1, state="up")
            other, gw = (f"{NET}.0", EDGE_GW) if edge else (f"{EDGE}.0", ETCD_IP)
            ipr.route("add", dst=other, dst_len=24, gateway=gw)
        d = self.tmp / name
        config = {
            "node": name,
            "cluster": "t1",
            "cluster_id": 1,
            "etcd_endpoints": [f"http://{ETCD_IP}:2379"],
            "pod_cidr": "10.244.0.0/16",
            "node_prefix": 24,
            "mode": self.mode,
            "underlay_interface": "eth1",
            "underlay_address": ip,
            "underlay_mtu": 1500,
            "segment": segment,
            "state_dir": str(d / "state"),
            "run_dir": str(d / "run"),
            "log_dir": str(d / "log"),
            "netns_dir": str(d / "netns"),
            "bird_socket": str(d / "run" / "bird.ctl"),  # nodes here share the host's /run
            # nodes share the host's filesystem here: CNI paths go to the node's dir
            "cni_bin_dirs": [str(d / "cni-bin"), "/usr/lib/cni"],
            "cni_conf_dir": str(d / "cni-conf"),
            "cni_cache_dir": str(d / "cni-cache"),
            "lease_ttl_s": 10,
            "resync_s": 2.0,
            # wireguard-go's sockets live in the host's /var/run/wireguard, shared by
            # every lab on the machine: a per-lab name, or two labs' n1 collide
            "wireguard_interface": "wg-" + hashlib.sha256(str(d).encode()).hexdigest()[:8],
            **cfg,
        }
        d.mkdir(parents=True)
        (d / "agent.yaml").write_text(yaml.safe_dump(config))
        node = Node(name, ns, ip, d, config)
        self.nodes.append(node)
        return node

    def _start_etcd(self) -> None:
        url = f"http://{ETCD_IP}:2379"
        log = open(self.tmp / "etcd.log", "wb")  # noqa: SIM115 (kept open for the child)
        self.etcd = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{self.fab}",
                "etcd",
                "--name",
                "t",
                "--data-dir",
                str(self.tmp / "etcd"),
                "--listen-client-urls",
                url,
                "--advertise-client-urls",
                url,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "t=http://127.0.0.1:2380",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _forwarder(self) -> int:
        """127.0.0.1:<free port> in the test's namespace → etcd inside the fabric netns."""
        self._lsock, port = forward(self.fab, ETCD_IP, 2379)
        return port

    # -- agents ----------------------------------------------------------------------
    def start_agent(self, node: Node) -> None:
        out = open(node.log, "ab")  # noqa: SIM115
        other = node.src or self.agent_src
        src = other or PROJECT
        env = {**os.environ, "PYTHONPATH": str(src)} if other else None
        if self.agent_env:
            env = {**(env or os.environ), **self.agent_env}
        node.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{node.ns}",
                PYTHON,
                "-m",
                "harness.agent.main",
                "--config",
                str(node.dir / "agent.yaml"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(src),
            env=env,
        )

    def stop_agent(self, node: Node, sig: int = signal.SIGTERM) -> None:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(sig)
            node.proc.wait(timeout=60)
        node.proc = None

    def stop_daemons(self, node: Node) -> None:
        """Stop the helpers an agent leaves running by design (BIRD, wireguard-go) by the
        pid files in the node's run dir: SIGTERM (wireguard-go removes its socket and
        interface), SIGKILL after 3 s (then its socket, named after the node, goes too)."""
        for name in DAEMON_PIDFILES:
            pidfile = node.dir / "run" / name
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
                if name == WG_PIDFILE:
                    iface = node.cfg.get("wireguard_interface") or wg_iface_name(node.name)
                    (WG_SOCKETS / f"{iface}.sock").unlink(missing_ok=True)
            pidfile.unlink(missing_ok=True)

    def replace_node(self, node: Node, **cfg: Any) -> Node:
        """Swap ``node`` for a brand-new one of the same name, address, segment and
        agent.yaml (``cfg`` over its settings): a new namespace and empty state, run and
        log dirs, as a node is when first deployed. Its agent is not started."""
        self.stop_agent(node, signal.SIGKILL)
        self.stop_daemons(node)
        self._remove_pods(node)
        # a removed namespace is torn down later by the kernel (and its veth with it):
        # delete the pair now, or the new node's port name is still taken
        with IPRoute(netns=self.fab) as fab:
            for idx in fab.link_lookup(ifname=self._port(int(node.name[1:]))):
                fab.link("del", index=idx)
        netns.remove(node.ns)
        self._made_ns.remove(node.ns)
        _umount_under(node.dir)  # netns handles, the pods' resolver mount namespaces
        run(["rm", "-rf", "--one-file-system", str(node.dir)])
        at = self.nodes.index(node)
        self.nodes.remove(node)
        settings = {k: v for k, v in node.cfg.items() if k != "segment"}  # same agent.yaml
        new = self.add_node(int(node.name[1:]), node.cfg["segment"], **{**settings, **cfg})
        self.nodes.remove(new)
        self.nodes.insert(at, new)
        return new

    def wait_node(self, node: Node, timeout: float = 60.0) -> dict[str, Any]:
        key = node_key("t1", node.name)
        kv = wait_for(f"node record of {node.name}", lambda: self.store.get(key), timeout)
        return dict(kv.json())

    def ns_run(self, node: Node, argv: list[str], timeout: float = 15, check: bool = True):
        return run(["nsenter", f"--net=/run/netns/{node.ns}", *argv], timeout, check=check)

    def ns_run_bg(self, node: Node, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the node's namespace in the background (caller stops it)."""
        return subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{node.ns}", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # -- pods -------------------------------------------------------------------------
    def apply_pod(
        self,
        name: str,
        node: Node,
        command: list[str],
        ns: str = "default",
        spec: dict[str, Any] | None = None,
        container: dict[str, Any] | None = None,
    ) -> None:
        """Write a Pod object to etcd exactly as ``podlab apply`` stores it."""
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": f"uid-{name}-{time.time()}",
                "labels": {},
            },
            "spec": {
                "nodeName": node.name,
                "containers": [{"name": "c", "command": command, **(container or {})}],
                **(spec or {}),
            },
        }
        self.store.put(pod_key("t1", ns, name), json.dumps(obj))

    def pod_status(self, name: str, ns: str = "default") -> dict[str, Any] | None:
        kv = self.store.get(podstatus_key("t1", ns, name))
        return dict(kv.json()) if kv else None

    def wait_running(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            st = self.pod_status(name)
            return st if st and st.get("phase") == "Running" else None

        return dict(wait_for(f"pod {name} Running", ok, timeout))

    def pod_run(
        self, node: Node, pod_netns: str, argv: list[str], timeout: float = 15, check: bool = True
    ):
        return run(["nsenter", f"--net={node.pod_netns(pod_netns)}", *argv], timeout, check=check)

    def spawn_in_fabric(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """Run a helper (e.g. an "outside world" echo server) in the fabric namespace."""
        argv = [PYTHON if a == "python" else a for a in argv]
        return subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.fab}", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=str(PROJECT),
        )

    # -- teardown --------------------------------------------------------------------
    def close(self) -> None:
        """Remove everything, each step on its own: one failure must not leak the rest."""
        steps: list[Callable[[], Any]] = []
        for node in self.nodes:
            steps.append(functools.partial(self.stop_agent, node, signal.SIGKILL))
            steps.append(functools.partial(self.stop_daemons, node))
            steps.append(functools.partial(self._remove_pods, node))
        if getattr(self, "_lsock", None) is not None:
            steps.append(self._lsock.close)
        steps.append(self._stop_etcd)
        steps += [functools.partial(netns.remove, ns) for ns in reversed(self._made_ns)]
        # whatever is still mounted under our temp dir (a pod netns an agent created
        # while being killed), deepest first
        steps += [functools.partial(self._remove_pods, node) for node in self.nodes]
        steps.append(self._umount_all)
        steps.append(lambda: run(["rm", "-rf", "--one-file-system", str(self.tmp)], check=False))
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep cleaning; report at the end
                print(f"agentlab cleanup step failed: {exc!r}")

    def _remove_pods(self, node: Node) -> None:
        nsdir = Path(node.cfg["netns_dir"])
        if not nsdir.is_dir():
            return
        for f in nsdir.iterdir():
            with contextlib.suppress(OSError):
                stop_pids(pids_in_netns(str(f)), grace=0.5)
            run(["umount", "-l", str(f)], check=False)
        run(["umount", "-l", str(nsdir)], check=False)

    def _umount_all(self) -> None:
        _umount_under(self.tmp)

    def _stop_etcd(self) -> None:
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.kill()
            self.etcd.wait(timeout=60)  # SIGKILL waits for pending disk I/O to finish


def _umount_under(top: Path) -> None:
    """Lazily unmount every mount point at or below ``top``, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    inside = (p for p in points if p == str(top) or p.startswith(f"{top}/"))
    for point in sorted(set(inside), reverse=True):
        run(["umount", "-l", point], check=False)


def forward(target_ns: str, ip: str, port: int) -> tuple[socket.socket, int]:
    """127.0.0.1:<free port> in the test's namespace → ``ip:port`` inside ``target_ns``.

    The test process talks to a lab service without any link between the host's
    namespace and the lab: each accepted connection is paired with a socket
    created inside ``target_ns`` (pyroute2 ``create_socket``). Returns the
    listening socket (the caller closes it) and its port.
    """
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)

    def pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            try:
                up = netns.create_socket(f"/run/netns/{target_ns}")
                up.connect((ip, port))
            except OSError:
                c.close()
                continue
            threading.Thread(target=pump, args=(c, up), daemon=True).start()
            threading.Thread(target=pump, args=(up, c), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return lsock, int(lsock.getsockname()[1])
