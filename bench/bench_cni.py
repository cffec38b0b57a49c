"""CNI plugin costs: ADD/DEL latency through podlab-cni vs the agent's previous direct path.

``sudo .venv/bin/python bench/bench_cni.py [--pods 30] [--rounds 5] [--concurrent 100]
[--workers 16] [--mode bridge]``

One throwaway "node" namespace; everything below runs inside it (the script
re-executes itself there). Per round, ``--pods`` pods are attached one after
another, then removed, by each path, the paths interleaved so they share the
machine's state:

- ``direct``: the agent's pod plumbing as it was before the plugin (commit
  f63d67b: pyroute2 ``netns.create`` and ``IPRoute(netns=…)``, veth, address,
  route, bridge port; address from memory), kept below as ``DirectPath``;
- ``plugin``: the agent's path now: netns by a helper thread, then
  ``Runtime.add``/``delete`` executing ``podlab-cni``, which forwards to a CNI
  server in this process (as the agent runs it), result cached as libcni does;
- ``in-process``: the same, with no server (``agentSocket: ""``): the plugin
  loads pyroute2 itself, as when the agent is down.

ADD = netns + attach; DEL = detach + netns removal. Prints p50/p99 per path and
the ratio to ``direct`` per round (median and spread over rounds), the plugin's
start-up and import cost, then ``--concurrent`` ADDs at once through the
server with ``--workers`` threads: duplicates, leftovers after DEL, total time.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyroute2 import IPRoute, netns

from harness.agent import netlink as nl

PLUGIN = Path(sys.executable).parent / "podlab-cni"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 50) * 1000:7.1f} ms  p99 {pct(values, 99) * 1000:7.1f} ms"


def outer(args: argparse.Namespace) -> int:
    """Create the node namespace, run the measurement inside it, remove everything."""
    node = f"podlab-b-cni-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="podlab-b-cni-", dir="/dev/shm"))
    netns.create(node)
    try:
        with IPRoute(netns=node) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        argv = [sys.executable, __file__, "--inner", str(tmp), *sys.argv[1:]]
        return subprocess.run(["nsenter", f"--net=/run/netns/{node}", *argv]).returncode
    finally:
        subprocess.run(["umount", "-R", "-l", str(tmp / "netns")], capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(tmp)], check=False)
        netns.remove(node)


def inner(args: argparse.Namespace, tmp: Path) -> int:
    from harness.cni import install, nsutil
    from harness.cni.netconf import conflist
    from harness.cni.runtime import Attachment, NetworkList, Runtime
    from harness.cni.server import CniServer

    (tmp / "subnet.env").write_text(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\n"
    )
    install.install(tmp / "bin")  # the launcher the agent installs
    nsdir = tmp / "netns"
    nsdir.mkdir()
    nsutil.share_dir(nsdir)
    server = CniServer(tmp / "cni.sock")
    server.start()
    runtime = Runtime([tmp / "bin"], tmp / "cache")

    def netlist(name: str, socket: str) -> NetworkList:
        conf = conflist(name, args.mode, 1450, subnet_file=str(tmp / "subnet.env"),
                        data_dir=str(tmp / "data"), agent_socket=socket,
                        health_file=str(tmp / "health"), versions=["1.0.0", "1.1.0"])  # fmt: skip
        return NetworkList.from_bytes(json.dumps(conf).encode())

    nets = {"plugin": netlist("b-srv", str(tmp / "cni.sock")), "in-process": netlist("b-inp", "")}

    def cni_add(path: str, net: NetworkList, i: int) -> Attachment:
        nsutil.create(path)
        with nsutil.iproute(path) as pod:
            pod.link("set", index=pod.link_lookup(ifname="lo")[0], state="up")
        args_ = (("K8S_POD_NAMESPACE", "b"), ("K8S_POD_NAME", f"p{i}"))
        att = Attachment(f"c{i}", path, "eth0", args_)
        runtime.add(net, att)
        return att

    def cni_del(att: Attachment, net: NetworkList) -> None:
        runtime.delete(net, att)
        nsutil.remove(att.netns)

    lat: dict[str, dict[str, list[float]]] = {
        p: {"ADD": [], "DEL": []} for p in ("direct", "plugin", "in-process")
    }
    ratios: dict[str, list[float]] = {"plugin": [], "in-process": []}
    direct = DirectPath(args.mode, "10.244.9.1/24", 1450)
    print(
        f"bench_cni: mode {args.mode}, {args.pods} pods × {args.rounds} rounds per path, "
        f"load {Path('/proc/loadavg').read_text().strip()}"
    )
    for r in range(args.rounds):
        per_round: dict[str, float] = {}
        for path_name in ("direct", "plugin", "in-process"):
            made = []
            t_round = 0.0
            for i in range(args.pods):
                path = str(nsdir / f"{path_name[:3]}{r}-{i}")
                t = time.perf_counter()
                if path_name == "direct":
                    made.append(direct.add(path, f"b/p{i}"))
                else:
                    made.append(cni_add(path, nets[path_name], i))
                d = time.perf_counter() - t
                lat[path_name]["ADD"].append(d)
                t_round += d
            for m in made:
                t = time.perf_counter()
                if path_name == "direct":
                    direct.remove(m)
                else:
                    cni_del(m, nets[path_name])
                d = time.perf_counter() - t
                lat[path_name]["DEL"].append(d)
                t_round += d
            per_round[path_name] = t_round
        for p in ratios:
            ratios[p].append(per_round[p] / per_round["direct"])
    for p, by in lat.items():
        print(f"  {p:10} ADD {ms(by['ADD'])}   DEL {ms(by['DEL'])}")
    for p, rs in ratios.items():
        print(
            f"  {p:10} ADD+DEL time ÷ direct: median {statistics.median(rs):.2f} "
            f"(min {min(rs):.2f}, max {max(rs):.2f}, {len(rs)} rounds)"
        )
    startup(tmp)
    concurrent(args, tmp, nets["plugin"], runtime, nsdir, cni_add, cni_del)
    server.close()
    return 0


def startup(tmp: Path) -> None:
    """What executing the plugin costs: a forwarded call (STATUS, answered by the server at
    once) through the native front and through the Python launcher; VERSION (no server)
    through the Python launcher and the console script; the two import sets."""
    import resource

    from harness.cni import install

    conf = json.dumps({"cniVersion": "1.1.0", "name": "b-start", "type": "podlab-cni",
                       "mode": "bridge", "subnetFile": str(tmp / "subnet.env"),
                       "agentSocket": str(tmp / "cni.sock"),
                       "healthFile": str(tmp / "health")}).encode()  # fmt: skip
    cases = [
        ("STATUS via the native front", tmp / "bin" / "podlab-cni", "STATUS", conf),
        ("STATUS via the Python launcher", tmp / "bin" / "podlab-cni-py", "STATUS", conf),
        ("VERSION via the Python launcher", tmp / "bin" / "podlab-cni-py", "VERSION", b"{}"),
        ("VERSION via the console script", PLUGIN, "VERSION", b"{}"),
    ]
    for label, exe, command, stdin in cases:
        env = {**os.environ, "CNI_COMMAND": command, "CNI_PATH": str(tmp / "bin")}
        times = []
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(20):
            t = time.perf_counter()
            subprocess.run([str(exe)], input=stdin, env=env, capture_output=True)
            times.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / 20
        print(f"  {label:32}: {ms(times)}, CPU {cpu * 1000:.1f} ms per call")
    paths = install.launcher_text().split("sys.path[:0] = ")[1].split("\n")[0]
    path = f"import sys; sys.path[:0] = {paths}"
    for what in ("harness.cni.plugin", "harness.cni.handler"):
        t = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-IS", "-c", f"{path}; import {what}"], check=True)
            t.append(time.perf_counter() - t0)
        print(f"  python -IS -c 'import {what}' (with sys.path set): {ms(t)}")


def concurrent(args, tmp, net, runtime, nsdir, cni_add, cni_del) -> None:  # type: ignore[no-untyped-def]
    """``--concurrent`` ADDs at once through the server; then DEL all; check leftovers."""
    n = args.concurrent
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        atts = list(pool.map(lambda i: cni_add(str(nsdir / f"cc-{i}"), net, 1000 + i), range(n)))
    t_add = time.perf_counter() - t0
    ips = [
        runtime.cached(net.name, a.container_id, "eth0").result["ips"][0]["address"] for a in atts
    ]
    dups = len(ips) - len(set(ips))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda a: cni_del(a, net), atts))
    t_del = time.perf_counter() - t0
    res = list((tmp / "data" / "ipam").glob("*/[0-9]*"))
    cache = list((tmp / "cache" / "results").glob(f"{net.name}-*"))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    veths = [ln for ln in links.splitlines() if "podlab-cni" in ln]
    print(
        f"  {n} concurrent ADDs ({args.workers} workers): {t_add:.2f} s total, "
        f"{len(set(ips))} distinct addresses, {dups} duplicates; DEL all: {t_del:.2f} s; "
        f"left behind: {len(res)} reservations, {len(cache)} cache files, {len(veths)} veths"
    )


LEGACY_BRIDGE = "cni0"
LEGACY_GATEWAY = "169.254.1.1"


@dataclass
class Made:
    path: str
    host_if: str
    ip: str


class DirectPath:  # the agent's pod plumbing as of commit f63d67b (before podlab-cni)
    """Attach and remove pods the old way, in the calling process's namespace."""

    def __init__(self, mode: str, gateway: str, mtu: int) -> None:
        self.mode, self.mtu = mode, mtu
        self.gateway = ipaddress.IPv4Interface(gateway)
        self.ipr = IPRoute()
        self.used: set[str] = set()
        if mode == "bridge":
            idx = nl.ensure_link(self.ipr, LEGACY_BRIDGE, {"kind": "bridge"})
            nl.ensure_addr(self.ipr, idx, self.gateway)
            nl.ensure_up(self.ipr, idx, mtu)

    def _allocate(self) -> str:
        for host in self.gateway.network.hosts():
            if host != self.gateway.ip and str(host) not in self.used:
                self.used.add(str(host))
                return str(host)
        raise RuntimeError("subnet full")

    def add(self, path: str, seed: str) -> Made:
        digest = hashlib.sha256(seed.encode()).hexdigest()
        host_if = ("veth" + digest[:8]) if self.mode == "bridge" else ("cali" + digest[:11])
        ip = self._allocate()
        netns.create(path)
        with IPRoute(netns=path) as pod:
            for idx in pod.link_lookup(ifname="eth0"):
                pod.link("del", index=idx)
        nl.ignore_missing(lambda: self.ipr.link("del", ifname=host_if))
        peer = {"ifname": "eth0", "net_ns_fd": path, "mtu": self.mtu}
        self.ipr.link("add", ifname=host_if, kind="veth", mtu=self.mtu, peer=peer)
        host_mac = str(nl.attr(nl.link(self.ipr, host_if), "IFLA_ADDRESS"))
        with IPRoute(netns=path) as pod:
            pod.link("set", index=pod.link_lookup(ifname="lo")[0], state="up")
            eth0 = pod.link_lookup(ifname="eth0")[0]
            if self.mode == "bridge":
                pod.addr("add", index=eth0, address=ip, prefixlen=self.gateway.network.prefixlen)
                pod.link("set", index=eth0, state="up", mtu=self.mtu)
                pod.route("replace", dst="0.0.0.0", dst_len=0, gateway=str(self.gateway.ip))
            else:
                nl.ensure_addr(pod, eth0, ipaddress.IPv4Interface(f"{ip}/32"))
                pod.link("set", index=eth0, state="up", mtu=self.mtu)
                pod.route("replace", dst=LEGACY_GATEWAY, dst_len=32, oif=eth0, scope=253)
                pod.neigh("replace", dst=LEGACY_GATEWAY, lladdr=host_mac, ifindex=eth0,
                          state=nl.NUD_PERMANENT)  # fmt: skip
                pod.route("replace", dst="0.0.0.0", dst_len=0, gateway=LEGACY_GATEWAY, oif=eth0)
        self._attach(host_if, ip)
        return Made(path, host_if, ip)

    def _attach(self, host_if: str, ip: str) -> None:
        idx = nl.ifindex(self.ipr, host_if)
        assert idx is not None
        if self.mode == "bridge":
            bridge = nl.ifindex(self.ipr, LEGACY_BRIDGE)
            msg = self.ipr.get_links(idx)[0]
            if nl.attr(msg, "IFLA_MASTER") != bridge:
                self.ipr.link("set", index=idx, master=bridge)
                self.ipr.brport("set", index=idx, mode=1)
            nl.ensure_up(self.ipr, idx)
        else:
            nl.ensure_up(self.ipr, idx)
            nl.set_sysctl(f"net/ipv4/conf/{host_if}/proxy_arp", "1")
            nl.set_sysctl(f"net/ipv4/neigh/{host_if}/proxy_delay", "0")
            self.ipr.route("replace", dst=ip, dst_len=32, oif=idx, scope=253, proto=78)

    def remove(self, made: Made) -> None:
        if self.mode == "routed":
            nl.ignore_missing(
                lambda: self.ipr.route("del", dst=made.ip, dst_len=32, scope=253, proto=78)
            )
        nl.ignore_missing(lambda: self.ipr.link("del", ifname=made.host_if))
        netns.remove(made.path)
        self.used.discard(made.ip)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--mode", choices=["bridge", "routed"], default="bridge")
    ap.add_argument("--inner", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        return inner(args, args.inner)
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
