"""Calico-style modes (bgp, ipip, calico-vxlan, cross-subnet) and WireGuard, end to end.

Real agents in namespace-nodes with real etcd (``agentlab``), real BIRD, the
userspace IPIP fallback (this kernel has no ipip module) and wireguard-go (no
wireguard module). Evidence comes from the kernel (routes with proto bird),
``birdc show protocols``, traffic from inside pods, and tcpdump on the underlay.
BIRD and wireguard-go outlive an agent by design, so the fixture stops them by the
pid files the agent keeps in each node's run dir.
"""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from pyroute2 import IPRoute

from harness.agent import bird, nft
from harness.cni import bridged, routed
from harness.testlab.agentlab import AgentLab, Node
from harness.testlab.calnet import ip_packets
from harness.testlab.wait import wait_for
from tests.agent.probes import ping, tcp_hello
from tests.agent.test_agent_datapath import ECHO, _up

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.timeout(300)]

MTU = {"bgp": 1500, "ipip": 1480, "calico-vxlan": 1450, "cross-subnet": 1450}
WG_MTU = {"host-gw": 1420, "vxlan": 1420, "bgp": 1440}  # Flannel −80, Calico −60
MARKER = "c0ffee5ec7e7"  # hex pattern ping puts in every echo payload
MARKER_BYTES = bytes.fromhex(MARKER)


@pytest.fixture
def calico_lab(agent_lab) -> Iterator[Callable[..., AgentLab]]:
    """``agent_lab`` plus teardown of the daemons agents leave running (BIRD, wireguard-go)."""
    labs: list[AgentLab] = []

    def make(n: int, mode: str, **cfg: Any) -> AgentLab:
        lab = agent_lab(n, mode, **cfg)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            for node in lab.nodes:
                lab.stop_agent(node, signal.SIGKILL)
                lab.stop_daemons(node)


def _set_cfg(node: Node, **cfg: Any) -> None:
    node.cfg.update(cfg)
    (node.dir / "agent.yaml").write_text(yaml.safe_dump(node.cfg))


class Capture:
    """tcpdump on a node's underlay (eth1), started before the traffic, stopped by pid."""

    def __init__(self, lab: AgentLab, node: Node, name: str) -> None:
        self.path = node.dir / f"{name}.pcap"
        self.err = node.dir / f"{name}.err"
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{node.ns}",
                    *("tcpdump", "-i", "eth1", "-U", "--immediate-mode", "-n", "-s", "0"),
                    *("-w", str(self.path)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_for("tcpdump", lambda: "listening on" in self.err.read_text(), 10)

    def stop(self) -> list[Any]:
        time.sleep(0.3)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        return ip_packets(self.path)


def _between(pkts: list[Any], a: str, b: str) -> list[Any]:
    return [p for p in pkts if {p.src, p.dst} == {a, b}]


def _has_marker(pkts: list[Any]) -> bool:
    return any(MARKER_BYTES in bytes(p) for p in pkts)


# -- connectivity + MTU, every mode ------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "encryption"),
    [
        ("bgp", "none"),
        ("ipip", "none"),
        ("calico-vxlan", "none"),
        ("cross-subnet", "none"),
        ("host-gw", "wireguard"),
        ("vxlan", "wireguard"),
        ("bgp", "wireguard"),
    ],
)
def test_pods_connect_with_mode_mtu(calico_lab, mode: str, encryption: str) -> None:
    lab = calico_lab(2, mode, encryption=encryption)
    pods = _up(lab)
    n1, _n2 = lab.nodes
    a, a2, b = pods["a"], pods["a2"], pods["b"]
    for target, name in ((a2, "a2"), (b, "b")):
        hello = wait_for(
            f"a → {name}",
            lambda t=target: lab.pod_run(
                n1, a["netns"], tcp_hello(t["podIP"], 8080), check=False
            ).stdout.split(),
        )
        assert hello[0] == name and hello[1].split(":")[0] == a["podIP"], hello
    assert lab.ns_run(n1, ping(b["podIP"]), check=False).returncode == 0, "node → remote pod"
    mtu = WG_MTU[mode] if encryption == "wireguard" else MTU[mode]
    with IPRoute(netns=n1.pod_netns(a["netns"])) as ipr:
        assert ipr.get_links(ipr.link_lookup(ifname="eth0")[0])[0].get_attr("IFLA_MTU") == mtu
    ok = lab.pod_run(n1, a["netns"], ping(b["podIP"], 1, mtu - 28, df=True), check=False)
    assert ok.returncode == 0, f"{mode}/{encryption}: DF ping of {mtu} bytes failed"
    big = lab.pod_run(n1, a["netns"], ping(b["podIP"], 1, mtu - 27, df=True), check=False)
    assert big.returncode != 0, f"{mode}/{encryption}: DF ping of {mtu + 1} passed"
    rec = lab.wait_node(n1)
    assert rec["mtu"] == mtu and not rec["problems"], rec
    if mode != "host-gw" and mode != "vxlan":  # Calico family: routed cali* veths
        links = lab.ns_run(n1, ["ip", "-o", "link", "show"]).stdout
        assert routed.host_if_name("default/a") in links and "cni0" not in links
    if encryption == "wireguard":
        assert rec["backend"]["WireguardPublicKey"] and rec["backend"]["WireguardPort"] == 51820
        rec = wait_for(
            "WireguardImpl published",
            lambda: (r := lab.wait_node(n1))["backend"].get("WireguardImpl") and r,
        )
        assert rec["backend"]["WireguardImpl"] in ("kernel", "wireguard-go")
        key = n1.dir / "state" / "wireguard" / "private.key"
        assert key.stat().st_mode & 0o077 == 0
        assert key.read_text().strip() not in str(lab.store.get_prefix("/")[0])


# -- BGP ------------------------------------------------------------------------------


def _birdc(lab: AgentLab, node: Node, *args: str) -> str:
    sock = str(node.dir / "run" / "bird.ctl")
    return lab.ns_run(node, ["birdc", "-s", sock, *args]).stdout


def _sessions_since(lab: AgentLab, node: Node) -> dict[str, str]:
    """BGP session name → the time its current state began (changes on every reset)."""
    sessions = bird.parse_protocols(_birdc(lab, node, "show", "protocols"))
    return {s.name: s.since for s in sessions if s.proto == "BGP"}


def _seconds(clock: str) -> float:
    """BIRD's "HH:MM:SS.mmm" as seconds since midnight."""
    h, m, sec = clock.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def _bird_routes(lab: AgentLab, node: Node) -> set[str]:
    """Prefixes BIRD installed in the node's kernel main table (proto bird)."""
    out = lab.ns_run(node, ["ip", "-o", "route", "show", "proto", "bird"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("reflector", [False, True])
def test_bgp_sessions_routes_and_withdrawal(calico_lab, reflector: bool) -> None:
    lab = calico_lab(3, "bgp")
    n1, n2, n3 = lab.nodes
    if reflector:
        _set_cfg(n1, route_reflector=True)
    for n in lab.nodes:
        lab.start_agent(n)
    subnets = {n.name: lab.wait_node(n)["podCIDR"] for n in lab.nodes}
    if reflector:
        expect = {"n1": {"peer_n2", "peer_n3"}, "n2": {"peer_n1"}, "n3": {"peer_n1"}}
    else:
        expect = {n.name: {f"peer_{m.name}" for m in lab.nodes if m is not n} for n in lab.nodes}

    def established(node: Node) -> set[str] | None:
        sessions = bird.parse_protocols(_birdc(lab, node, "show", "protocols"))
        names = {s.name for s in sessions if s.proto == "BGP"}
        up = {s.name for s in sessions if s.established}
        return up if up == names == expect[node.name] else None

    for n in lab.nodes:
        wait_for(f"{n.name}: every BGP session Established", lambda n=n: established(n))
    for n in lab.nodes:
        others = {subnets[m.name] for m in lab.nodes if m is not n}
        wait_for(
            f"{n.name}: peers' subnets proto bird", lambda n=n, o=others: _bird_routes(lab, n) >= o
        )
        assert subnets[n.name] not in _bird_routes(lab, n)
    via = lab.ns_run(n2, ["ip", "route", "get", subnets["n3"].split("/")[0]]).stdout
    assert f"via {n3.ip}" in via, via  # reflected routes keep the originator as next hop
    # pods across nodes (n2 ↔ n3 are not BGP peers in the reflector variant)
    lab.apply_pod("b", n2, [*ECHO, "--name", "b"])
    lab.apply_pod("c", n3, [*ECHO, "--name", "c"])
    b, c = lab.wait_running("b"), lab.wait_running("c")
    hello = wait_for(
        "b → c",
        lambda: lab.pod_run(
            n2, b["netns"], tcp_hello(c["podIP"], 8080), check=False
        ).stdout.split(),
    )
    assert hello[0] == "c"
    # an agent restart adopts the running BIRD: n1's sessions are not reset
    before = _sessions_since(lab, n1)
    lab.stop_agent(n1)
    lab.start_agent(n1)
    wait_for("n1's agent adopts BIRD", lambda: "adopting running BIRD" in n1.log.read_text())
    time.sleep(4)  # two resync periods: the restarted agent has re-rendered bird.conf
    after = _sessions_since(lab, n1)
    assert after.keys() == before.keys(), after
    # BIRD prints "since" by converting its monotonic clock to wall time at each call, so the
    # same instant can print 1 ms apart; a reset would move it by the seconds the restart took
    moved = {k: abs(_seconds(after[k]) - _seconds(before[k])) for k in before}
    assert max(moved.values()) < 0.5, f"agent restart reset BGP sessions: {before} → {after}"
    # stop n3's agent (BIRD stays, routes stay), then its BIRD: n3's routes are withdrawn
    lab.stop_agent(n3)
    time.sleep(1)
    assert subnets["n3"] in _bird_routes(lab, n2), "routes must survive an agent stop"
    bird.Bird(n3.dir / "run").stop()
    for n in (n1, n2):
        wait_for(
            f"{n.name}: n3's subnet withdrawn",
            lambda n=n: subnets["n3"] not in _bird_routes(lab, n),
            timeout=15,
        )
    assert subnets["n2"] in _bird_routes(lab, n1)
    lab.start_agent(n3)  # the agent starts BIRD again; the route comes back
    wait_for("n3's subnet back on n2", lambda: subnets["n3"] in _bird_routes(lab, n2))


# -- IPIP on the wire ---------------------------------------------------------------------


def test_ipip_userspace_puts_protocol_4_on_the_wire(calico_lab) -> None:
    lab = calico_lab(2, "ipip")
    pods = _up(lab)
    n1, n2 = lab.nodes
    rec = lab.wait_node(n1)
    impl = rec["backend"]["IPIPImpl"]
    assert impl in ("kernel", "userspace")
    assert ("USERSPACE IPIP" in n1.log.read_text()) == (impl == "userspace")
    cap = Capture(lab, n1, "ipip")
    try:
        res = lab.pod_run(
            n1,
            pods["a"]["netns"],
            [*ping(pods["b"]["podIP"], 3)[:-1], "-p", MARKER, pods["b"]["podIP"]],
            check=False,
        )
    finally:
        pkts = cap.stop()
    assert res.returncode == 0
    outer = _between(pkts, n1.ip, n2.ip)
    ipip = [p for p in outer if p.proto == 4]
    assert ipip and all(p.proto == 4 for p in outer if MARKER_BYTES in bytes(p)), outer
    inner = ipip[0].payload
    assert {inner.src, inner.dst} == {pods["a"]["podIP"], pods["b"]["podIP"]}


# -- cross-subnet: direct within a segment, VXLAN across ----------------------------------


def _raw_chains(lab: AgentLab, node: Node) -> set[str]:
    """The node's notrack chains: ``raw-output`` (ip podlab), ``raw-ingress`` (netdev)."""
    ruleset = lab.ns_run(node, ["nft", "list", "ruleset"]).stdout
    return {c for c in ("raw-output", "raw-ingress", "raw-prerouting") if f"chain {c} " in ruleset}


def test_cross_subnet_encapsulates_only_across_segments(calico_lab) -> None:
    """Direct within a segment, VXLAN across; the VXLAN packets are exempted from
    conntrack only while a peer sits behind the tunnel (no raw chain for every pod
    packet to pass before that; docs/throughput.md "What costs", item 8)."""
    lab = calico_lab(2, "cross-subnet")
    for n in lab.nodes:
        lab.start_agent(n)
    n1, n2 = lab.nodes
    subnet2 = lab.wait_node(n2)["podCIDR"]
    wait_for(
        "n1's route to n2 (a sync with the peer)",
        lambda: subnet2 in lab.ns_run(n1, ["ip", "route", "show", "proto", "77"]).stdout,
    )
    assert _raw_chains(lab, n1) == set(), "raw chains with no peer behind the tunnel"
    n3 = lab.add_node(3, segment="edge")
    lab.start_agent(n3)
    wait_for(
        "notrack chains on n1 once n3 is a peer",
        lambda: _raw_chains(lab, n1) == {"raw-output", "raw-ingress"},
    )
    for name, node in (("a", n1), ("b", n2), ("c", n3)):
        lab.apply_pod(name, node, [*ECHO, "--name", name])
    a, b, c = (lab.wait_running(p) for p in ("a", "b", "c"))
    for t in (b, c):
        wait_for(
            f"a → {t['podIP']}",
            lambda t=t: lab.pod_run(n1, a["netns"], ping(t["podIP"]), check=False).returncode == 0,
        )
    cap = Capture(lab, n1, "xsub")
    try:
        for t in (b, c):
            lab.pod_run(n1, a["netns"], ["ping", "-c", "3", "-i", "0.2", "-p", MARKER, t["podIP"]])
    finally:
        pkts = cap.stop()
    direct = [p for p in pkts if {p.src, p.dst} == {a["podIP"], b["podIP"]}]
    assert direct and all(p.proto == 1 for p in direct), "same segment must be unencapsulated"
    assert not _between(pkts, n1.ip, n2.ip), "no encapsulated traffic within the segment"
    assert not [p for p in pkts if c["podIP"] in (p.src, p.dst)], "c's traffic in clear"
    tunnel = _between(pkts, n1.ip, n3.ip)
    assert tunnel and all(p.proto == 17 and 4789 in (p.sport, p.dport) for p in tunnel)
    assert any(MARKER_BYTES in bytes(p) for p in tunnel)
    lab.pod_run(n1, a["netns"], tcp_hello(c["podIP"], 8080))
    tracked = lab.ns_run(n1, ["cat", "/proc/net/nf_conntrack"]).stdout
    assert f"dst={c['podIP']}" in tracked, "the pod flow itself is not tracked"
    assert "dport=4789" not in tracked, f"VXLAN packets tracked on n1:\n{tracked}"
    # control: without them it is tracked
    lab.ns_run(n1, ["nft", "delete", "chain", nft.FAMILY, nft.TABLE, "raw-output"])
    lab.ns_run(n1, ["nft", "delete", "table", "netdev", nft.UNDERLAY_TABLE])
    lab.pod_run(n1, a["netns"], tcp_hello(c["podIP"], 8080))
    tracked = lab.ns_run(n1, ["cat", "/proc/net/nf_conntrack"]).stdout
    assert "dport=4789" in tracked, "control: VXLAN untracked without the raw chains"


# -- WireGuard on the wire, with its negative control ---------------------------------


@pytest.mark.parametrize("mode", ["host-gw", "vxlan"])
@pytest.mark.parametrize("encryption", ["none", "wireguard"])
def test_wireguard_hides_pod_traffic(calico_lab, mode: str, encryption: str) -> None:
    lab = calico_lab(2, mode, encryption=encryption)
    n1, n2 = lab.nodes
    for n in lab.nodes:
        lab.start_agent(n)
    lab.apply_pod("a", n1, ["sleep", "infinity"])
    lab.apply_pod("b", n2, ["sleep", "infinity"])
    a, b = lab.wait_running("a"), lab.wait_running("b")
    wait_for(
        "a → b",
        lambda: lab.pod_run(n1, a["netns"], ping(b["podIP"]), check=False).returncode == 0,
    )
    cap = Capture(lab, n1, "wg")
    try:
        lab.pod_run(n1, a["netns"], ["ping", "-c", "5", "-i", "0.2", "-p", MARKER, b["podIP"]])
    finally:
        pkts = cap.stop()
    between = _between(pkts, n1.ip, n2.ip) + _between(pkts, a["podIP"], b["podIP"])
    assert between, "the capture saw no traffic between the nodes at all"
    if encryption == "wireguard":
        assert not _has_marker(pkts), "marker visible on the underlay with WireGuard on"
        assert all(p.proto == 17 and 51820 in (p.sport, p.dport) for p in between), [
            p.summary() for p in between
        ]
    else:
        assert _has_marker(between), "negative control: the marker must be visible in clear"


# -- a mode switch across families --------------------------------------------------------

#: per mode: how a node routes a peer's pod subnet (device, rtm_protocol) once it is set up
PEER_ROUTE = {
    "bgp": ("eth1", bird.RTPROT_BIRD),
    "vxlan": ("flannel.1", 77),
    "host-gw": ("eth1", 77),
}


def _replumbed(node: Node, name: str, pod: dict[str, Any], routed_style: bool, mtu: int) -> bool:
    """Pod ``name``'s veth is the style's (the other style's gone), both ends at ``mtu``;
    raises naming what is not there yet (``wait_for`` reports the last reason)."""
    want = routed.host_if_name(f"default/{name}")
    other = bridged.host_if_name(f"default/{name}")
    if not routed_style:
        want, other = other, want
    with IPRoute(netns=node.ns) as ipr:
        found = ipr.link_lookup(ifname=want)
        assert found and not ipr.link_lookup(ifname=other), f"{name}: {want} not (alone) there"
        host_mtu = ipr.get_links(found[0])[0].get_attr("IFLA_MTU")
        assert host_mtu == mtu, f"{name}: {want} MTU {host_mtu}"
    with IPRoute(netns=node.pod_netns(pod["netns"])) as ipr:
        eth0 = ipr.link_lookup(ifname="eth0")
        pod_mtu = ipr.get_links(eth0[0])[0].get_attr("IFLA_MTU") if eth0 else None
        assert pod_mtu == mtu, f"{name}: eth0 MTU {pod_mtu}"
    return True


def _peer_route(node: Node, subnet: str) -> tuple[str | None, int] | None:
    """(device, protocol) of the node's main-table route to ``subnet``, if any."""
    net = ipaddress.IPv4Network(subnet)
    with IPRoute(netns=node.ns) as ipr:
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
        for r in ipr.get_routes(family=2, table=254):
            if r.get_attr("RTA_DST") == str(net.network_address) and r["dst_len"] == net.prefixlen:
                return names.get(r.get_attr("RTA_OIF")), r["proto"]
    return None


def test_running_pods_follow_a_switch_of_pod_interface_family(calico_lab) -> None:
    """vxlan (bridged cni0) → bgp (routed cali*) → vxlan → host-gw: the same pods, same
    processes and addresses, re-plumbed in the new style with the new MTU, and nothing
    of the previous mode left on the node.

    After each switch the test first waits for the state it then asserts — both pods
    re-plumbed (veth style, MTU at both ends) and each node routing the other's pod
    subnet the new mode's way — and only then checks traffic, once: pods that answer
    over a path that is still the old one prove nothing about the new one.
    """
    lab = calico_lab(2, "vxlan")
    pods = _up(lab)
    n1, n2 = lab.nodes
    a, b = pods["a"], pods["b"]
    veth = lab.ns_run(n1, ["ip", "-o", "link", "show"]).stdout
    assert "cni0" in veth and routed.host_if_name("default/a") not in veth
    subnets = {n.name: lab.wait_node(n)["podCIDR"] for n in lab.nodes}
    for mode, mtu in (("bgp", 1500), ("vxlan", 1450), ("host-gw", 1500)):
        for n in lab.nodes:
            lab.stop_agent(n)
            _set_cfg(n, mode=mode)
            lab.start_agent(n)
        routed_style = mode == "bgp"
        wait_for(
            f"a and b re-plumbed for {mode} (veth style, MTU {mtu} at both ends)",
            lambda rs=routed_style, m=mtu: (
                _replumbed(n1, "a", a, rs, m) and _replumbed(n2, "b", b, rs, m)
            ),
        )
        for node, peer in ((n1, "n2"), (n2, "n1")):
            wait_for(
                f"{node.name} routes {peer}'s pods the {mode} way {PEER_ROUTE[mode]}",
                lambda node=node, peer=peer, m=mode: (
                    _peer_route(node, subnets[peer]) == PEER_ROUTE[m]
                ),
            )
        links = lab.ns_run(n1, ["ip", "-o", "link", "show"]).stdout
        assert ("cni0" in links) != routed_style, links
        assert ("flannel.1" in links) == (mode == "vxlan"), f"{mode}: flannel.1 {links}"
        assert (bird.Bird(n1.dir / "run").pid() is not None) == (mode == "bgp"), "BIRD"
        hello = lab.pod_run(n1, a["netns"], tcp_hello(b["podIP"], 8080), check=False)
        words = hello.stdout.split()
        assert words[:1] == ["b"] and words[1].split(":")[0] == a["podIP"], (mode, hello)
        df = lab.pod_run(n1, a["netns"], ping(b["podIP"], 2, mtu - 28, df=True), check=False)
        assert df.returncode == 0, f"{mode}: DF ping of {mtu} bytes a → b failed"
        big = lab.pod_run(n1, a["netns"], ping(b["podIP"], 1, mtu - 27, df=True), check=False)
        assert big.returncode != 0, f"{mode}: DF ping of {mtu + 1} bytes passed"
        now = lab.pod_status("a")
        assert now is not None and now["podIP"] == a["podIP"]
        assert now["containerStatuses"][0]["restartCount"] == 0, "the pod was restarted"
