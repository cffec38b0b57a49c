"""Build and remove a hand-built pod path in throwaway namespaces (pyroute2 only).

Five named namespaces per reference (six with a router), all ``plref-<tag>-…`` (the prefix is the
marker ``down`` goes by): ``f`` holds the underlay bridge ``br0`` (as a lab's
``kind: bridge`` segment does), ``a`` and ``b`` are the two nodes (``eth1``
10.255.0.1/.2 on that bridge, forwarding on), ``pa`` and ``pb`` the two pods
(``eth0``, 10.255.1.2 on node a, 10.255.2.2 on node b). With ``router`` (a
mesh's cross-cluster path) ``f`` holds two bridges, ``br0`` for node a
(10.255.0.1) and ``br1`` for node b (10.255.3.2), and a sixth namespace ``r``
routes between them (``eth1`` 10.255.0.254 on br0, ``eth2`` 10.255.3.254 on
br1, forwarding on), as a lab's router joins two cluster segments; each node
routes the other segment via its ``.254``. Per ``RefSpec``:

- bridged pods: bridge ``cni0`` with the subnet's ``.1`` on the node, the pod's
  veth a port of it, the pod's default route via ``.1`` (flannel's recipe);
- routed pods: a ``cali`` veth with proxy-ARP and a /32 ``scope link`` route on
  the node; in the pod a /32, a permanent neighbour and a default route for
  169.254.1.1 (Calico's recipe, as ``cni/routed.py`` builds it);
- encap ``none``: ``<peer subnet> via <peer eth1> dev eth1`` (with ``router``:
  via the router, which routes each subnet to its node: native routing);
- ``vxlan``: device ``vxref`` (VNI, port, local, dev eth1, learning off, MTU
  underlay − 50), ``<subnet>.0/32`` on it, per peer an onlink route, a permanent
  neighbour and an FDB entry (flannel's vxlan design note);
- ``ipip``: device ``ipref`` (local, dev eth1) and ``<peer subnet> via <peer
  eth1> dev ipref onlink`` (Calico's tunl0 routes);
- ``wireguard``: a kernel ``wireguard`` link or a ``wireguard-go`` process,
  keys from ``wg genkey`` in 0600 files, ``wg set`` with the peer's subnet as
  its allowed IPs, ``<peer subnet> dev <wg>``.

Nothing is written outside these namespaces except the state directory
(``STATE_ROOT/<tag>``: the spec, pids, keys, logs). Run inside a lab node, the
namespaces live in that node's private ``/run/netns`` and die with the node at
the latest; run on a host (the bench), beside everything else. ``build`` that
fails half-way removes what it made; ``teardown`` stops every process it
started by pid and deletes the namespaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from harness.exec import run
from harness.refpath.spec import BRIDGED, RefSpec

PREFIX = "plref-"
STATE_ROOT = Path("/run/podlab-refpath")
TAG = re.compile(r"^[a-z0-9]{1,8}$")
UNDERLAY = ipaddress.IPv4Network("10.255.0.0/24")
UNDERLAY_B = ipaddress.IPv4Network("10.255.3.0/24")  # node b's segment behind a router
ROUTER_HOST = 254  # the router's address on each segment
SUBNETS = (ipaddress.IPv4Network("10.255.1.0/24"), ipaddress.IPv4Network("10.255.2.0/24"))
CALICO_GW = "169.254.1.1"
WG_PORT = 51820
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7
RTNH_F_ONLINK = 0x04
ROLES = ("f", "r", "a", "b", "pa", "pb")  # r: only with a router
SCOPE_LINK = 253
VXLAN_OVERHEAD = 50
IPIP_OVERHEAD = 20


@dataclass(frozen=True)
class RefPath:
    """What a caller needs to measure a built reference (printed as JSON by the CLI)."""

    tag: str
    spec: str  # RefSpec.name
    client_netns: str  # pod a
    server_netns: str  # pod b
    server_ip: str
    port: int  # the iperf3 server in pod b (0: none started)
    nodes: tuple[str, str]  # node namespaces a, b
    node_ip: str = ""  # node b's underlay address (node→node on the same underlay)
    node_port: int = 0  # the iperf3 server in node b (0: none started)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> RefPath:
        data = json.loads(text)
        data["nodes"] = tuple(data["nodes"])
        return RefPath(**data)


def ns_name(tag: str, role: str) -> str:
    """``plref-<tag>-<role>``: role f (fabric), a, b (nodes), pa, pb (pods)."""
    return f"{PREFIX}{tag}-{role}"


def check_tag(tag: str) -> str:
    if not TAG.match(tag):
        raise ValueError(f"tag {tag!r}: use 1-8 lowercase letters or digits")
    return tag


def new_tag() -> str:
    """A tag unlikely to be in use: pid and clock, base 36, 8 characters at most."""
    n = (os.getpid() * 1_000_003 + time.monotonic_ns() // 1000) % 36**8
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


class _Builder:
    """One reference under construction; remembers what it made for the undo."""

    def __init__(self, spec: RefSpec, tag: str) -> None:
        self.spec, self.tag = spec, check_tag(tag)
        self.dir = STATE_ROOT / tag
        self.pids: list[int] = []

    def ns(self, role: str) -> str:
        return ns_name(self.tag, role)

    @property
    def roles(self) -> tuple[str, ...]:
        return ROLES if self.spec.router else tuple(r for r in ROLES if r != "r")

    def segment(self, i: int) -> ipaddress.IPv4Network:
        return UNDERLAY_B if self.spec.router and i == 1 else UNDERLAY

    def node_ip(self, i: int) -> str:
        return str(self.segment(i).network_address + 1 + i)

    def router_ip(self, i: int) -> str:
        return str(self.segment(i).network_address + ROUTER_HOST)

    def pod_ip(self, i: int) -> str:
        return str(SUBNETS[i].network_address + 2)

    # -- the skeleton: namespaces, underlay, pods ---------------------------------
    def in_use(self) -> bool:
        return (
            any(Path(f"/var/run/netns/{self.ns(r)}").exists() for r in ROLES) or self.dir.exists()
        )

    def namespaces(self) -> None:
        for role in self.roles:
            name = self.ns(role)
            netns.create(name)
            with IPRoute(netns=name) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def underlay(self) -> None:
        mtu = self.spec.underlay_mtu
        bridges = ("br0", "br1") if self.spec.router else ("br0", "br0")
        with IPRoute(netns=self.ns("f")) as fab:
            for name in sorted(set(bridges)):
                fab.link("add", ifname=name, kind="bridge", mtu=mtu)
                fab.link("set", index=fab.link_lookup(ifname=name)[0], state="up")
            ends = [(f"p{role}", self.ns(role), "eth1", bridges[i]) for i, role in enumerate("ab")]
            if self.spec.router:  # the router's legs: eth1 on a's segment, eth2 on b's
                ends += [("ra", self.ns("r"), "eth1", "br0"), ("rb", self.ns("r"), "eth2", "br1")]
            for port_name, ns, ifname, bridge in ends:
                peer = {"ifname": ifname, "net_ns_fd": ns, "mtu": mtu}
                fab.link("add", ifname=port_name, kind="veth", mtu=mtu, peer=peer)
                port = fab.link_lookup(ifname=port_name)[0]
                master = fab.link_lookup(ifname=bridge)[0]
                fab.link("set", index=port, master=master, state="up")
        for i, role in enumerate("ab"):
            with IPRoute(netns=self.ns(role)) as node:
                eth1 = node.link_lookup(ifname="eth1")[0]
                node.addr("add", index=eth1, address=self.node_ip(i), prefixlen=24)
                node.link("set", index=eth1, state="up")
                if self.spec.router:
                    other = self.segment(1 - i)
                    node.route("add", dst=str(other), gateway=self.router_ip(i), oif=eth1)
            run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=self.ns(role))
        if self.spec.router:
            with IPRoute(netns=self.ns("r")) as r:
                for i, ifname in enumerate(("eth1", "eth2")):
                    idx = r.link_lookup(ifname=ifname)[0]
                    r.addr("add", index=idx, address=self.router_ip(i), prefixlen=24)
                    r.link("set", index=idx, state="up")
            run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=self.ns("r"))

    def pod(self, i: int) -> None:
        node_ns, pod_ns = self.ns("ab"[i]), self.ns(("pa", "pb")[i])
        mtu, subnet, ip = self.spec.pod_mtu, SUBNETS[i], self.pod_ip(i)
        host_if = "vethref" if self.spec.pods == BRIDGED else "caliref"
        with IPRoute(netns=node_ns) as node:
            peer = {"ifname": "eth0", "net_ns_fd": pod_ns, "mtu": mtu}
            node.link("add", ifname=host_if, kind="veth", mtu=mtu, peer=peer)
            idx = node.link_lookup(ifname=host_if)[0]
            host_mac = node.get_links(idx)[0].get_attr("IFLA_ADDRESS")
            if self.spec.pods == BRIDGED:
                node.link("add", ifname="cni0", kind="bridge", mtu=mtu)
                br = node.link_lookup(ifname="cni0")[0]
                node.addr("add", index=br, address=str(subnet.network_address + 1), prefixlen=24)
                node.link("set", index=br, state="up")
                node.link("set", index=idx, master=br, state="up")
            else:
                node.link("set", index=idx, state="up")
                node.route("add", dst=ip, dst_len=32, oif=idx, scope=SCOPE_LINK)
        if self.spec.pods != BRIDGED:
            run(["sysctl", "-qw", f"net.ipv4.conf.{host_if}.proxy_arp=1"], netns=node_ns)
            run(["sysctl", "-qw", f"net.ipv4.neigh.{host_if}.proxy_delay=0"], netns=node_ns)
        with IPRoute(netns=pod_ns) as pod:
            eth0 = pod.link_lookup(ifname="eth0")[0]
            if self.spec.pods == BRIDGED:
                pod.addr("add", index=eth0, address=ip, prefixlen=24)
                pod.link("set", index=eth0, state="up")
                pod.route("add", dst="0.0.0.0", dst_len=0, gateway=str(subnet.network_address + 1))
            else:
                pod.addr("add", index=eth0, address=ip, prefixlen=32)
                pod.link("set", index=eth0, state="up")
                pod.route("add", dst=CALICO_GW, dst_len=32, oif=eth0, scope=SCOPE_LINK)
                pod.neigh("add", dst=CALICO_GW, lladdr=host_mac, ifindex=eth0,
                          state=NUD_PERMANENT)  # fmt: skip
                pod.route("add", dst="0.0.0.0", dst_len=0, gateway=CALICO_GW, oif=eth0)

    # -- between the nodes ---------------------------------------------------------
    def routes(self, i: int) -> None:
        peer, peer_ip = SUBNETS[1 - i], self.node_ip(1 - i)
        with IPRoute(netns=self.ns("ab"[i])) as node:
            eth1 = node.link_lookup(ifname="eth1")[0]
            if self.spec.encap == "none" and self.spec.router:  # native routing
                node.route("add", dst=str(peer), gateway=self.router_ip(i), oif=eth1)
                with IPRoute(netns=self.ns("r")) as r:
                    leg = r.link_lookup(ifname=("eth1", "eth2")[i])[0]
                    r.route("add", dst=str(SUBNETS[i]), gateway=self.node_ip(i), oif=leg)
            elif self.spec.encap == "none":
                node.route("add", dst=str(peer), gateway=peer_ip, oif=eth1)
            elif self.spec.encap == "vxlan":
                self._vxlan(node, i, eth1)
            elif self.spec.encap == "ipip":
                node.link("add", ifname="ipref", kind="ipip", ipip_local=self.node_ip(i),
                          ipip_link=eth1)  # fmt: skip
                dev = node.link_lookup(ifname="ipref")[0]
                mtu = self.spec.underlay_mtu - IPIP_OVERHEAD
                node.addr("add", index=dev, address=str(SUBNETS[i].network_address), prefixlen=32)
                node.link("set", index=dev, state="up", mtu=mtu)
                node.route("add", dst=str(peer), gateway=peer_ip, oif=dev, flags=RTNH_F_ONLINK)

    @staticmethod
    def vtep_mac(i: int) -> str:
        return f"0e:70:6c:72:65:{i + 1:02x}"  # locally administered, fixed per node

    def _vxlan(self, node: IPRoute, i: int, eth1: int) -> None:
        s = self.spec
        node.link("add", ifname="vxref", kind="vxlan", vxlan_id=s.vni, vxlan_port=s.port,
                  vxlan_learning=0, vxlan_local=self.node_ip(i), vxlan_link=eth1,
                  address=self.vtep_mac(i), mtu=s.underlay_mtu - VXLAN_OVERHEAD)  # fmt: skip
        dev = node.link_lookup(ifname="vxref")[0]
        node.addr("add", index=dev, address=str(SUBNETS[i].network_address), prefixlen=32)
        node.link("set", index=dev, state="up")
        gw, mac = str(SUBNETS[1 - i].network_address), self.vtep_mac(1 - i)
        node.neigh("add", dst=gw, lladdr=mac, ifindex=dev, state=NUD_PERMANENT)
        node.fdb("append", ifindex=dev, lladdr=mac, dst=self.node_ip(1 - i),
                 state=NUD_PERMANENT, flags=NTF_SELF)  # fmt: skip
        node.route("add", dst=str(SUBNETS[1 - i]), gateway=gw, oif=dev, flags=RTNH_F_ONLINK)

    def wireguard(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        pubs = [self._wg_key(i) for i in (0, 1)]
        for i in (0, 1):
            self._wg_device(i)
        for i in (0, 1):
            iface, node_ns = self.wg_iface(i), self.ns("ab"[i])
            peer = str(SUBNETS[1 - i])
            run(["wg", "set", iface, "private-key", str(self.dir / f"{i}.key"),
                 "listen-port", str(WG_PORT), "peer", pubs[1 - i],
                 "endpoint", f"{self.node_ip(1 - i)}:{WG_PORT}", "allowed-ips", peer],
                netns=node_ns)  # fmt: skip
            with IPRoute(netns=node_ns) as node:
                dev = node.link_lookup(ifname=iface)[0]
                node.addr("add", index=dev, address=str(SUBNETS[i].network_address), prefixlen=32)
                node.link("set", index=dev, state="up", mtu=self.spec.pod_mtu)
                node.route("add", dst=peer, oif=dev)

    def wg_iface(self, i: int) -> str:
        # wireguard-go's control socket is /var/run/wireguard/<iface>.sock, shared by
        # every namespace of the host: the name carries the tag
        return f"wgr{self.tag}{'ab'[i]}"

    def _wg_key(self, i: int) -> str:
        key = run(["wg", "genkey"], timeout=10).stdout.strip()
        path = self.dir / f"{i}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        return run(["wg", "pubkey"], timeout=10, input=key + "\n").stdout.strip()

    def _wg_device(self, i: int) -> None:
        iface, node_ns = self.wg_iface(i), self.ns("ab"[i])
        if self.spec.wireguard == "kernel":
            with IPRoute(netns=node_ns) as node:
                node.link("add", ifname=iface, kind="wireguard")
            return
        log = open(self.dir / f"wireguard-go-{i}.log", "ab")  # noqa: SIM115 (child keeps it)
        with log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", node_ns, "wireguard-go", "-f", iface],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "WG_PROCESS_FOREGROUND": "1"},
            )  # fmt: skip
        self._remember(proc.pid)
        sock = Path("/var/run/wireguard") / f"{iface}.sock"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sock.exists():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"wireguard-go {iface} did not come up (log in {self.dir})")

    # -- processes -----------------------------------------------------------------
    def _remember(self, pid: int) -> None:
        self.pids.append(pid)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "pids").write_text("".join(f"{p}\n" for p in self.pids))

    def server(self, port: int, lifetime_s: float, role: str = "pb") -> None:
        """A persistent ``iperf3 -s`` in pod b, or node b (one test at a time, many tests)."""
        argv = ["ip", "netns", "exec", self.ns(role), "timeout", f"{lifetime_s:g}",
                "iperf3", "-s", "-p", str(port)]  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self._remember(proc.pid)

    def wait_path(self, timeout_s: float = 10.0) -> None:
        """Pod a reaches pod b (ARP resolved, a WireGuard handshake done), or fail."""
        deadline = time.monotonic() + timeout_s
        while True:
            res = run(["ping", "-c1", "-W1", self.pod_ip(1)], timeout=5, netns=self.ns("pa"),
                      check=False)  # fmt: skip
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"hand-built {self.spec.name}: pod a cannot reach pod b")


def build(
    spec: RefSpec, tag: str, server_port: int = 0, lifetime_s: float = 600, node_port: int = 0
) -> RefPath:
    """Build ``spec`` under ``tag`` (and an iperf3 server in pod b if ``server_port``, one
    in node b if ``node_port``: the reference's own node→node).

    On any failure, everything made so far is removed before the error propagates.
    """
    b = _Builder(spec, tag)
    if b.in_use():
        raise RuntimeError(f"tag {tag} is in use here (python -m harness.refpath down --tag {tag})")
    try:
        b.dir.mkdir(parents=True)
        (b.dir / "spec.json").write_text(spec.to_json())
        b.namespaces()
        b.underlay()
        for i in (0, 1):
            b.pod(i)
        if spec.encap == "wireguard":
            b.wireguard()
        else:
            for i in (0, 1):
                b.routes(i)
        if server_port:
            b.server(server_port, lifetime_s)
        if node_port:
            b.server(node_port, lifetime_s, role="b")
        b.wait_path()
    except BaseException:
        teardown(tag)
        raise
    return RefPath(tag, spec.name, b.ns("pa"), b.ns("pb"), b.pod_ip(1), server_port,
                   (b.ns("a"), b.ns("b")), b.node_ip(1), node_port)  # fmt: skip


def _stop(pid: int) -> None:
    """SIGTERM, then SIGKILL after 3 s; our own children are reaped (ESRCH = gone)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def teardown(tag: str) -> list[str]:
    """Stop the reference's processes (by the pids it recorded) and delete its namespaces.

    Idempotent; returns the namespaces it removed. Each step runs even if another
    failed, so a half-built reference goes away too.
    """
    check_tag(tag)
    state = STATE_ROOT / tag
    with contextlib.suppress(OSError, ValueError):
        for line in (state / "pids").read_text().split():
            _stop(int(line))
    removed = []
    for role in reversed(ROLES):
        name = ns_name(tag, role)
        if Path(f"/var/run/netns/{name}").exists():
            with contextlib.suppress(OSError, NetlinkError):
                netns.remove(name)
                removed.append(name)
    run(["rm", "-rf", "--one-file-system", str(state)], check=False)
    return removed


def existing_tags() -> list[str]:
    """Tags of references whose namespaces exist here (for ``down --all``)."""
    tags = set()
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir("/var/run/netns"):
            if name.startswith(PREFIX) and name.count("-") == 2:
                tags.add(name.split("-")[1])
    with contextlib.suppress(FileNotFoundError):
        tags.update(os.listdir(STATE_ROOT))
    return sorted(t for t in tags if TAG.match(t))
