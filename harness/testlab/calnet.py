"""A bare throwaway underlay for Calico-mode building-block tests (no etcd, no agent).

Layout (every name carries ``podlab-t-cal`` and the test process's pid):

    netns <tag>-fab : bridge br0 with one port ``p<i>-<pid>`` per node
    netns <tag>-n<i>: eth1 = 10.198.0.<i>/24 (veth into br0), lo up

``CalNet.close()`` stops every process it started (by pid), removes the
namespaces and the temp dir; tests use it as ``with CalNet(2) as net:``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute, netns

from harness.testlab.wait import wait_for

NET = "10.198.0"
T = TypeVar("T")


class CalNet:
    def __init__(self, n_nodes: int) -> None:
        self.tag = f"podlab-t-cal-{os.getpid() % 100000}"
        self.fab = f"{self.tag}-fab"
        self.tmp = Path(tempfile.mkdtemp(prefix="podlab-t-cal-"))
        self.nodes: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cleanups: list[Callable[[], object]] = []  # run first, last added first
        self._made: list[str] = []
        try:
            self._ns(self.fab)
            with IPRoute(netns=self.fab) as ipr:
                ipr.link("add", ifname="br0", kind="bridge")
                ipr.link("set", index=ipr.link_lookup(ifname="br0")[0], state="up")
            for i in range(1, n_nodes + 1):
                self._node(i)
        except BaseException:
            self.close()
            raise

    def _ns(self, name: str) -> None:
        netns.create(name)
        self._made.append(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def extra_ns(self, name: str) -> str:
        """One more namespace ``<tag>-<name>`` (a pod), removed by ``close()``."""
        full = f"{self.tag}-{name}"
        self._ns(full)
        return full

    def port(self, i: int) -> str:
        """The fabric-side veth of node ``i`` (where the underlay is captured)."""
        return f"p{i}-{os.getpid() % 100000}"

    def ip(self, i: int) -> str:
        return f"{NET}.{i}"

    def ns(self, i: int) -> str:
        return self.nodes[i - 1]

    def _node(self, i: int) -> None:
        ns = f"{self.tag}-n{i}"
        self._ns(ns)
        with IPRoute(netns=self.fab) as fab:
            fab.link(
                "add", ifname=self.port(i), kind="veth", peer={"ifname": "eth1", "net_ns_fd": ns}
            )
            idx = fab.link_lookup(ifname=self.port(i))[0]
            fab.link("set", index=idx, master=fab.link_lookup(ifname="br0")[0], state="up")
        with IPRoute(netns=ns) as ipr:
            eth1 = ipr.link_lookup(ifname="eth1")[0]
            ipr.addr("add", index=eth1, address=self.ip(i), prefixlen=24)
            ipr.link("set", index=eth1, state="up")
        self.nodes.append(ns)

    def pod_address(self, i: int, address: str) -> None:
        """Give node ``i`` a 'pod' address on lo (a stand-in for a pod; no dummy module here)."""
        with IPRoute(netns=self.ns(i)) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=address, prefixlen=32)

    def in_netns(self, i: int, fn: Callable[[], T]) -> T:
        """Call ``fn`` on a thread that entered node ``i``'s namespace (sockets, TUN fds
        and IPRoute objects it creates belong there); the test's own thread never moves."""
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                netns.setns(self.ns(i), flags=0)  # flags=0: never create a namespace
                box["v"] = fn()
            except BaseException as exc:  # handed to the caller
                box["e"] = exc

        t = threading.Thread(target=body)
        t.start()
        t.join()
        if "e" in box:
            raise box["e"]
        return box["v"]  # type: ignore[no-any-return]

    def capture(self, i: int, name: str) -> Capture:
        """Start tcpdump on node ``i``'s fabric port; stop it with ``Capture.stop()``."""
        cap = Capture(self, self.port(i), self.tmp / f"{name}.pcap")
        self.procs.append(cap.proc)
        return cap

    def __enter__(self) -> CalNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as exc:  # keep cleaning; say what failed
                print(f"calnet cleanup {fn!r} failed: {exc}")
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for name in reversed(self._made):
            with contextlib.suppress(OSError):
                netns.remove(name)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Capture:
    """``tcpdump -w`` on a fabric port, packet-buffered, started before the traffic."""

    def __init__(self, net: CalNet, port: str, path: Path) -> None:
        self.path = path
        self.err = path.with_suffix(".err")
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    net.fab,
                    "tcpdump",
                    "-i",
                    port,
                    "-U",
                    "--immediate-mode",
                    "-n",
                    "-s",
                    "0",
                    "-w",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_for(f"tcpdump on {port}", lambda: "listening on" in self.err.read_text(), 10)

    def stop(self) -> bytes:
        """Stop tcpdump (by pid) and return the pcap file's bytes."""
        time.sleep(0.3)  # let the last packets reach the file
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        return self.path.read_bytes()


def ip_packets(pcap: Path) -> list[Any]:
    """IPv4 packets of a capture, as scapy objects (ARP and IPv6 left out)."""
    from scapy.layers.inet import IP
    from scapy.utils import rdpcap

    return [p[IP] for p in rdpcap(str(pcap)) if IP in p]


def ping(net: CalNet, i: int, dst: str, count: int = 3, **kw: str) -> bool:
    """True when pings from node ``i`` get replies (ping exits 0: at least one came back;
    ``pattern=hex`` fills the payload, ``src`` picks the source address)."""
    argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "1"]
    if "pattern" in kw:
        argv += ["-p", kw["pattern"]]
    if "src" in kw:
        argv += ["-I", kw["src"]]
    res = subprocess.run(
        ["ip", "netns", "exec", net.ns(i), *argv, dst], capture_output=True, text=True, timeout=30
    )
    return res.returncode == 0
