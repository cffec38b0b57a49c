"""A one-node namespace lab for service-proxy and policy tests (no etcd, no agent).

Namespaces ``podlab-t-svc-<id>-<role>``: one node, pods wired to it by routed
veths (pod ``10.244.0.<4i+2>/30`` → node ``<4i+1>``, as Calico does), and an
``outside`` namespace on ``192.168.77.0/24`` for NodePort from outside the
cluster. Backends run a tiny server answering their pod name on TCP 8080/9090
and UDP 8080. Everything is removed by ``close()`` (processes by pid first).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field

from pyroute2 import NetNS, netns

from harness.exec import run

SERVER = r"""
import socket, sys, threading
name = sys.argv[1]
def tcp(port, reply):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(512)
    while True:
        c, _ = s.accept()
        try: c.sendall(reply.encode() + b"\n")
        finally: c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(2048); s.sendto(name.encode(), peer)
threading.Thread(target=tcp, args=(9090, name + "-9090"), daemon=True).start()
threading.Thread(target=udp, args=(8080,), daemon=True).start()
tcp(8080, name)
"""

# Makes N connections to ip:port and prints a JSON list of outcomes: the reply line,
# "refused", "timeout" or the error name. argv: ip port n [udp]
CLIENT = r"""
import json, socket, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
udp = len(sys.argv) > 4
out = []
for _ in range(n):
    try:
        if udp:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
            s.sendto(b"x", (ip, port)); out.append(s.recv(2048).decode())
        else:
            s = socket.create_connection((ip, port), timeout=2)
            s.settimeout(2); out.append(s.makefile().readline().strip())
        s.close()
    except ConnectionRefusedError:
        out.append("refused")
    except (socket.timeout, TimeoutError):
        out.append("timeout")
    except OSError as e:
        out.append(type(e).__name__)
print(json.dumps(out))
"""


@dataclass
class Pod:
    name: str
    ns: str
    ip: str
    gw: str
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class SvcLab:
    """Build with ``SvcLab.create(n_backends)``; always ``close()``."""

    prefix: str
    node: str
    pods: dict[str, Pod] = field(default_factory=dict)
    outside: str = ""
    namespaces: list[str] = field(default_factory=list)

    NODE_OUTSIDE_IP = "192.168.77.1"
    OUTSIDE_IP = "192.168.77.2"
    CLUSTER_CIDR = "10.244.0.0/16"
    SERVICE_CIDR = "10.96.0.0/16"

    bridged: bool = False  # pods on a cni0 bridge (flannel style) instead of routed veths

    @classmethod
    def create(cls, backends: int, clients: int = 1, bridged: bool = False) -> SvcLab:
        prefix = f"podlab-t-svc-{uuid.uuid4().hex[:6]}"
        lab = cls(prefix, f"{prefix}-node", bridged=bridged)
        try:
            lab._ns(lab.node)
            run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=lab.node)
            if bridged:
                with NetNS(lab.node) as ipr:
                    ipr.link("add", ifname="cni0", kind="bridge")
                    idx = ipr.link_lookup(ifname="cni0")[0]
                    ipr.addr("add", index=idx, address="10.244.0.1", prefixlen=24)
                    ipr.link("set", index=idx, state="up")
            names = [f"b{i}" for i in range(backends)] + [f"c{i}" for i in range(clients)]
            for i, name in enumerate(names):
                lab._pod(i, name)
            lab._outside()
            for name in names:
                if name.startswith("b"):
                    lab.start_server(name)
        except BaseException:
            lab.close()
            raise
        return lab

    def _ns(self, name: str) -> None:
        netns.create(name)
        self.namespaces.append(name)
        with NetNS(name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def _veth(
        self, host_if: str, peer_ns: str, host_cidr: str | None, peer_cidr: str, gw: str = ""
    ) -> None:
        """A veth node↔peer; ``host_cidr`` None = the node side is a port of cni0."""
        with NetNS(self.node) as ipr:
            ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": "tmp0"})
            peer = ipr.link_lookup(ifname="tmp0")[0]
            ipr.link("set", index=peer, net_ns_fd=peer_ns)
            idx = ipr.link_lookup(ifname=host_if)[0]
            if host_cidr is None:
                ipr.link("set", index=idx, master=ipr.link_lookup(ifname="cni0")[0])
                # as the CNI bridge plugin's hairpinMode: with bridge netfilter a
                # pod's packet DNATed back to itself leaves by the port it came in
                ipr.brport("set", index=idx, mode=1)
            else:
                addr, plen = host_cidr.split("/")
                ipr.addr("add", index=idx, address=addr, prefixlen=int(plen))
                gw = addr
            ipr.link("set", index=idx, state="up")
        with NetNS(peer_ns) as ipr:
            idx = ipr.link_lookup(ifname="tmp0")[0]
            ipr.link("set", index=idx, ifname="eth0")
            addr, plen = peer_cidr.split("/")
            ipr.addr("add", index=idx, address=addr, prefixlen=int(plen))
            ipr.link("set", index=idx, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=gw)

    def _pod(self, i: int, name: str) -> None:
        ns = f"{self.prefix}-{name}"
        self._ns(ns)
        if self.bridged:
            gw, ip = "10.244.0.1", f"10.244.0.{i + 2}"
            self._veth(f"vh{name}", ns, None, f"{ip}/24", gw)
        else:
            gw, ip = f"10.244.0.{4 * i + 1}", f"10.244.0.{4 * i + 2}"
            self._veth(f"vh{name}", ns, f"{gw}/30", f"{ip}/30")
        self.pods[name] = Pod(name, ns, ip, gw)

    def _outside(self) -> None:
        self.outside = f"{self.prefix}-out"
        self._ns(self.outside)
        self._veth("vout", self.outside, f"{self.NODE_OUTSIDE_IP}/24", f"{self.OUTSIDE_IP}/24")

    def start_server(self, name: str) -> None:
        pod = self.pods[name]
        argv = ["ip", "netns", "exec", pod.ns, sys.executable, "-c", SERVER, name]
        pod.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = [sys.executable, "-c", CLIENT, "127.0.0.1", "8080", "1"]
        for _ in range(50):
            if json.loads(run(probe, netns=pod.ns).stdout) == [name]:
                return
        raise RuntimeError(f"server in {name} did not start")

    def stop_server(self, name: str) -> None:
        pod = self.pods[name]
        if pod.proc is not None and pod.proc.poll() is None:
            os.kill(pod.proc.pid, signal.SIGKILL)
            pod.proc.wait(timeout=10)
        pod.proc = None

    def connect(self, src_ns: str, ip: str, port: int, n: int, udp: bool = False) -> list[str]:
        """Outcomes of ``n`` connections from namespace ``src_ns`` to ip:port."""
        argv = [sys.executable, "-c", CLIENT, ip, str(port), str(n), *(["udp"] if udp else [])]
        return list(json.loads(run(argv, timeout=30 + 3 * n, netns=src_ns).stdout))

    def close(self) -> None:
        for name in self.pods:
            with contextlib.suppress(Exception):
                self.stop_server(name)
        for ns in reversed(self.namespaces):
            with contextlib.suppress(Exception):
                netns.remove(ns)
        self.namespaces.clear()
