"""Pod networking across namespace-nodes, per Flannel mode (real kernel, real etcd).

Each test builds 2–3 node namespaces on one bridge, runs the real agent in each
(``python -m harness.agent.main``), applies pods through etcd as ``podlab apply``
would, and checks traffic from inside the pods.
"""

from __future__ import annotations

import pytest
from pyroute2 import IPRoute

from harness.agent import nft
from harness.testlab.agentlab import ETCD_IP, AgentLab
from harness.testlab.wait import wait_for
from tests.agent.probes import ping, tcp_hello, udp_echo

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

ECHO = [
    "python",
    "-m",
    "harness.workloads.echo",
    "--tcp",
    "8080",
    "--udp",
    "8081",
    "--http",
    "8000",
]
MTU = {"host-gw": 1500, "vxlan": 1450, "udp": 1472}
OUTSIDE = "198.51.100.1"  # documentation range, lives on the lab's fabric namespace


def _up(lab: AgentLab) -> dict[str, dict]:
    """Start agents, apply pods a (n1), a2 (n1), b (n2); return their statuses."""
    for n in lab.nodes:
        lab.start_agent(n)
    for n in lab.nodes:
        lab.wait_node(n)
    n1, n2 = lab.nodes[0], lab.nodes[1]
    for name, node in (("a", n1), ("a2", n1), ("b", n2)):
        lab.apply_pod(name, node, [*ECHO, "--name", name])
    pods = {p: lab.wait_running(p) for p in ("a", "a2", "b")}
    for p, st in pods.items():  # the echo servers are listening
        node = n1 if p != "b" else n2
        wait_for(
            f"{p} echo",
            lambda node=node, st=st: (
                lab.pod_run(node, st["netns"], tcp_hello(st["podIP"], 8080), check=False).returncode
                == 0
            ),
        )
    return pods


@pytest.mark.parametrize("mode", ["host-gw", "vxlan", "udp"])
def test_pod_to_pod_across_nodes(agent_lab, mode: str) -> None:
    lab = agent_lab(2, mode)
    pods = _up(lab)
    n1, n2 = lab.nodes
    a, a2, b = pods["a"], pods["a2"], pods["b"]
    assert a["hostIP"] == n1.ip and b["hostIP"] == n2.ip
    assert a["podIP"] != a2["podIP"]

    def from_a(argv: list[str], check: bool = True):
        return lab.pod_run(n1, a["netns"], argv, check=check)

    # ICMP, TCP, UDP, HTTP: same node and across nodes
    for target, name in ((a2, "a2"), (b, "b")):
        ip = target["podIP"]
        assert from_a(ping(ip), check=False).returncode == 0, f"a cannot ping {name} {ip}"
        hello = from_a(tcp_hello(ip, 8080)).stdout.split()
        assert hello == [name, f"{a['podIP']}:{hello[1].split(':')[1]}"], (
            f"{name} saw a's connection as {hello} (pod→pod must not be NATed)"
        )
        assert from_a(udp_echo(ip, 8081)).stdout.strip() == f"{name} ping"
        assert from_a(["curl", "-s", "-m", "3", f"http://{ip}:8000/"]).stdout == f"{name}\n"
    # node → pod on another node, pod → node
    assert lab.ns_run(n1, ping(b["podIP"]), check=False).returncode == 0, "n1 cannot ping pod b"
    assert from_a(ping(n2.ip), check=False).returncode == 0, "pod a cannot ping node n2"
    # MTU: every pod interface has the mode's MTU; the largest DF ping fits, one more does not
    mtu = MTU[mode]
    with IPRoute(netns=n1.pod_netns(a["netns"])) as ipr:
        assert ipr.get_links(ipr.link_lookup(ifname="eth0")[0])[0].get_attr("IFLA_MTU") == mtu
    assert from_a(ping(b["podIP"], 1, mtu - 28, df=True), check=False).returncode == 0, (
        f"{mode}: DF ping of {mtu} bytes from a to b failed"
    )
    assert from_a(ping(b["podIP"], 1, mtu - 27, df=True), check=False).returncode != 0, (
        f"{mode}: DF ping of {mtu + 1} bytes from a to b passed; MTU is not {mtu}"
    )
    subnet_env = (n1.dir / "run" / "subnet.env").read_text()
    assert f"FLANNEL_MTU={mtu}\n" in subnet_env and "FLANNEL_IPMASQ=true" in subnet_env


def test_egress_is_masqueraded_pod_to_pod_is_not(agent_lab) -> None:
    lab = agent_lab(2, "vxlan")
    pods = _up(lab)
    n1 = lab.nodes[0]
    # an "outside world" host on the fabric (documentation range), reachable via the fabric
    with IPRoute(netns=f"/run/netns/{lab.fab}") as fab:
        fab.addr("add", index=fab.link_lookup(ifname="fab-e")[0], address=OUTSIDE, prefixlen=32)
    with IPRoute(netns=f"/run/netns/{n1.ns}") as ipr:
        ipr.route("add", dst="198.51.100.0", dst_len=24, gateway=ETCD_IP)
    srv = lab.spawn_in_fabric([*ECHO[:3], "--tcp", "9000", "--name", "outside"])
    try:
        hello = wait_for(
            "outside echo",
            lambda: lab.pod_run(
                n1, pods["a"]["netns"], tcp_hello(OUTSIDE, 9000), check=False
            ).stdout.split(),
        )
        assert hello[0] == "outside"
        assert hello[1].split(":")[0] == n1.ip, f"egress not masqueraded: seen as {hello[1]}"
    finally:
        srv.kill()
        srv.wait()
    table = lab.ns_run(n1, ["nft", "-j", "list", "table", nft.FAMILY, nft.TABLE]).stdout
    assert "masquerade" in table
    _vxlan_outer_packets_are_not_tracked(lab, pods)


def _conntrack(lab: AgentLab, node) -> str:  # type: ignore[no-untyped-def]
    return lab.ns_run(node, ["cat", "/proc/net/nf_conntrack"]).stdout


def _vxlan_outer_packets_are_not_tracked(lab: AgentLab, pods: dict[str, dict]) -> None:
    """The tunnel's UDP 8472 skips conntrack on both ends; pod flows inside are tracked.

    Negative control: without the agent's ``raw-output`` chain and its underlay
    table (``raw-ingress``) the same traffic leaves
    UDP 8472 entries behind, so the check can see them when they are there.
    """
    n1, n2 = lab.nodes
    a, b = pods["a"], pods["b"]
    lab.pod_run(n1, a["netns"], tcp_hello(b["podIP"], 8080))
    for node in (n1, n2):
        table = _conntrack(lab, node)
        assert "dport=8472" not in table, f"{node.name} tracks VXLAN packets:\n{table}"
    assert f"dst={b['podIP']}" in _conntrack(lab, n1), "the pod flow itself is not tracked"
    for node in (n1, n2):
        lab.ns_run(node, ["nft", "delete", "chain", nft.FAMILY, nft.TABLE, "raw-output"])
        lab.ns_run(node, ["nft", "delete", "table", "netdev", nft.UNDERLAY_TABLE])
    lab.pod_run(n1, a["netns"], udp_echo(b["podIP"], 8081))
    assert "dport=8472" in _conntrack(lab, n1), "control: VXLAN untracked without the rules"


def test_host_gw_refuses_peer_on_other_segment(agent_lab) -> None:
    lab = agent_lab(2, "host-gw")
    lab.add_node(3, segment="edge")
    for n in lab.nodes:
        lab.start_agent(n)
    n1 = lab.nodes[0]
    lab.wait_node(lab.nodes[2])
    rec = wait_for(
        "problem in n1's node record", lambda: (r := lab.wait_node(n1)).get("problems") and r
    )
    text = " ".join(rec["problems"])
    assert "n3" in text and "segment edge" in text and "vxlan" in text
    assert "n2" not in text
    subnets = {n.name: lab.wait_node(n)["podCIDR"] for n in lab.nodes}
    routes = lab.ns_run(n1, ["ip", "route", "show", "proto", "77"]).stdout
    assert subnets["n2"] in routes, routes
    assert subnets["n3"] not in routes, routes
    assert "host-gw needs every node on one L2 segment" in n1.log.read_text()


def test_vxlan_works_across_segments(agent_lab) -> None:
    """cross-subnet topology: n3 sits behind a router; the overlay does not care."""
    lab = agent_lab(1, "vxlan")
    lab.add_node(3, segment="edge")
    for n in lab.nodes:
        lab.start_agent(n)
    n1, n3 = lab.nodes
    assert lab.wait_node(n3)["underlayIP"].startswith("10.198.0.")
    lab.apply_pod("a", n1, [*ECHO, "--name", "a"])
    lab.apply_pod("c", n3, [*ECHO, "--name", "c"])
    a, c = lab.wait_running("a"), lab.wait_running("c")
    hello = wait_for(
        "a → c over vxlan across the router",
        lambda: lab.pod_run(
            n1, a["netns"], tcp_hello(c["podIP"], 8080), check=False
        ).stdout.split(),
    )
    assert hello[0] == "c"
    assert (
        lab.pod_run(n1, a["netns"], ping(c["podIP"], 1, 1450 - 28, df=True), check=False).returncode
        == 0
    )
    assert not lab.wait_node(n1)["problems"]


def test_missing_underlay_interface_is_a_clear_start_up_error(agent_lab) -> None:
    lab = agent_lab(1, "vxlan", underlay_interface="eth9")
    n1 = lab.nodes[0]
    lab.start_agent(n1)
    assert n1.proc is not None and n1.proc.wait(timeout=120) == 1
    log = n1.log.read_text()
    assert "start-up failed while setting up the vxlan datapath" in log
    assert "underlay interface eth9 not found" in log
