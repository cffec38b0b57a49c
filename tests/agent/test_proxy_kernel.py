"""Every proxy mode on a real kernel: spread, refusal, NodePort, affinity, updates.

One node namespace with routed pod veths (``svclab``); the proxy is programmed
directly with ``ServicePort`` lists, so these tests prove the datapath each mode
builds, independent of etcd. Every blocked/refused case has a control.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest

from harness.agent.proxy import conntrack, iptables, nftables
from harness.agent.proxy.base import ServiceProxy, nft_script
from harness.agent.proxy.model import Endpoint, ServicePort
from harness.agent.proxy.registry import ProxyOptions, make_proxy
from harness.errors import ToolError
from harness.exec import run
from harness.testlab.svclab import SERVER, SvcLab
from harness.testlab.wait import wait_for

pytestmark = pytest.mark.root

VIP = "10.96.0.5"
# χ² critical values at α = 0.001 by degrees of freedom: a fair spread fails 1 in 1000 runs.
CHI2_CRIT = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47}
MODES = ["nftables", "iptables", "userspace"]


def svc(lab: SvcLab, backends: list[str], port: int = 80, target: int = 8080, **kw) -> ServicePort:
    eps = tuple(sorted(Endpoint(lab.pods[b].ip, target) for b in backends))
    fields = {"port_name": "", "protocol": "tcp", "name": "web", **kw}
    return ServicePort("default", cluster_ip=VIP, port=port, endpoints=eps, **fields)


def chi2(counts: Counter[str], names: list[str]) -> float:
    n = sum(counts[k] for k in names)
    expected = n / len(names)
    return sum((counts[k] - expected) ** 2 / expected for k in names)


@pytest.fixture(scope="module")
def lab() -> Iterator[SvcLab]:
    lab = SvcLab.create(backends=3)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(params=MODES)
def proxy(request: pytest.FixtureRequest, lab: SvcLab) -> Iterator[ServiceProxy]:
    opts = ProxyOptions(lab.SERVICE_CIDR, lab.CLUSTER_CIDR, netns=lab.node)
    p = make_proxy(request.param, opts)
    try:
        yield p
    finally:
        p.close()


def test_cluster_ip_spreads_over_every_ready_backend(lab: SvcLab, proxy: ServiceProxy) -> None:
    names = ["b0", "b1", "b2"]
    proxy.full_sync([svc(lab, names)])
    got = Counter(lab.connect(lab.pods["c0"].ns, VIP, 80, 300))
    assert set(got) == set(names), f"c0 → {VIP}:80 via {proxy.name}: outcomes {dict(got)}"
    stat = chi2(got, names)
    assert stat < CHI2_CRIT[2], f"{proxy.name}: spread {dict(got)} fails χ² ({stat:.1f})"


def test_no_endpoints_refuses_at_once_and_control_connects(
    lab: SvcLab, proxy: ServiceProxy
) -> None:
    proxy.full_sync([svc(lab, [])])
    start = time.monotonic()
    got = lab.connect(lab.pods["c0"].ns, VIP, 80, 3)
    took = time.monotonic() - start
    assert got == ["refused"] * 3, f"{proxy.name}: empty service gave {got}, expected refused"
    assert took < 1.5, f"{proxy.name}: refusal took {took:.2f}s (a timeout, not a reject)"
    proxy.update([svc(lab, ["b1"])])  # control: the same address works once it has one
    assert lab.connect(lab.pods["c0"].ns, VIP, 80, 3) == ["b1"] * 3


def test_nft_no_endpoints_refuses_before_a_node_listener(lab: SvcLab) -> None:
    """The no-endpoint reject sits in the NAT chains (a connection's first packet),
    not in filter chains on every packet: it must still refuse from a pod
    (prerouting), from the node itself (output) and from outside to a NodePort.

    A server in the node's namespace listens on the same ports on every address,
    the service CIDR included (it is local on the node): without the reject the
    connections reach it, which the control shows by removing the service.
    """
    node = subprocess.Popen(["ip", "netns", "exec", lab.node, sys.executable, "-c", SERVER, "node"])
    proxy = make_proxy("nftables", ProxyOptions(lab.SERVICE_CIDR, lab.CLUSTER_CIDR, netns=lab.node))
    try:
        wait_for(
            "the node's server", lambda: lab.connect(lab.node, "127.0.0.1", 8080, 1) == ["node"]
        )
        proxy.full_sync([svc(lab, [], port=8080, node_port=9090)])
        c0 = lab.pods["c0"].ns
        ways = [(c0, VIP, 8080), (lab.node, VIP, 8080), (lab.outside, lab.NODE_OUTSIDE_IP, 9090)]
        got = [lab.connect(src, ip, port, 2) for src, ip, port in ways]
        assert got == [["refused"] * 2] * 3, f"pod, node, outside to an empty service: {got}"
        proxy.update([])  # control: without the service they reach the node's server
        got = [lab.connect(src, ip, port, 1) for src, ip, port in ways]
        assert got == [["node"], ["node"], ["node-9090"]], f"control: {got}"
    finally:
        proxy.close()
        node.kill()
        node.wait()


def test_endpoint_change_moves_traffic(lab: SvcLab, proxy: ServiceProxy) -> None:
    proxy.full_sync([svc(lab, ["b0", "b1", "b2"])])
    proxy.update([svc(lab, ["b0", "b1"])])
    got = Counter(lab.connect(lab.pods["c0"].ns, VIP, 80, 60))
    assert set(got) == {"b0", "b1"}, f"{proxy.name}: after removing b2: {dict(got)}"
    proxy.update([svc(lab, ["b2"])])
    assert set(lab.connect(lab.pods["c0"].ns, VIP, 80, 10)) == {"b2"}


def test_nft_count_changes_are_incremental_never_a_full_sync(lab: SvcLab) -> None:
    """A backend joining or leaving changes the endpoint count; every count up to
    ``lb_max`` has its ``lb-N`` chain from the full sync, so the update is map
    elements only — no table rebuild (it was one on every new count: nft 1.0.6
    cannot add a rule that looks up a map it did not create in the same transaction).
    Control: such a rule in a transaction of its own is refused by this nft."""
    p = nftables.NftablesProxy(nftables.NftConfig(lab.SERVICE_CIDR, lab.CLUSTER_CIDR), lab.node)
    full = []
    plain_full_sync = p.full_sync
    p.full_sync = lambda s: (full.append(1), plain_full_sync(s))[1]  # type: ignore[method-assign]
    try:
        p.full_sync([svc(lab, ["b0", "b1", "b2"])])
        for names in (["b0", "b1"], ["b2"], ["b0", "b2"], ["b0", "b1", "b2"]):
            p.update([svc(lab, names)])
            assert set(lab.connect(lab.pods["c0"].ns, VIP, 80, 20)) == set(names)
        assert len(full) == 1, f"{len(full) - 1} full syncs for endpoint count changes"
        probe = nftables._lb_chains(p.lb_max + 1)  # a count beyond: no chain made yet
        with pytest.raises(ToolError, match="conflicting protocols"):
            nft_script("\n".join(probe) + "\n", lab.node)
        many = svc(lab, ["b0"]).endpoints * (p.lb_max + 1)  # weights: repeated entries
        p.update([replace(svc(lab, ["b0"]), endpoints=many)])
        assert len(full) == 2, "a count beyond lb_max makes its chains by a full sync"
        assert set(lab.connect(lab.pods["c0"].ns, VIP, 80, 10)) == {"b0"}
    finally:
        p.close()


def test_hairpin_backend_reaches_itself(lab: SvcLab, proxy: ServiceProxy) -> None:
    proxy.full_sync([svc(lab, ["b0", "b1"])])
    got = Counter(lab.connect(lab.pods["b0"].ns, VIP, 80, 40))
    assert set(got) == {"b0", "b1"}, f"{proxy.name}: b0 → its own service: {dict(got)}"


def test_session_affinity_sticks_then_expires(lab: SvcLab, proxy: ServiceProxy) -> None:
    names = ["b0", "b1", "b2"]
    proxy.full_sync([svc(lab, names, affinity_s=1)])
    got = lab.connect(lab.pods["c0"].ns, VIP, 80, 20)
    assert len(set(got)) == 1 and got[0] in names, f"{proxy.name}: not sticky: {got}"
    seen = {got[0]}
    for _ in range(8):  # P(all 8 fresh picks equal the first) = 3^-8
        time.sleep(1.6)
        seen |= set(lab.connect(lab.pods["c0"].ns, VIP, 80, 1))
    assert len(seen) > 1, f"{proxy.name}: affinity never expired ({seen})"
    proxy.update([svc(lab, names)])  # sessionAffinity None again: spread
    assert len(set(lab.connect(lab.pods["c0"].ns, VIP, 80, 30))) > 1


def test_multi_port_and_udp_removing_one_port_breaks_only_it(
    lab: SvcLab, proxy: ServiceProxy
) -> None:
    a = svc(lab, ["b1"], port=80, port_name="http")
    b = svc(lab, ["b1"], port=90, target=9090, port_name="alt")
    u = svc(lab, ["b1"], port=80, port_name="dns", protocol="udp")
    proxy.full_sync([a, b, u])
    c0 = lab.pods["c0"].ns
    assert lab.connect(c0, VIP, 80, 2) == ["b1", "b1"]
    assert lab.connect(c0, VIP, 90, 2) == ["b1-9090"] * 2
    assert lab.connect(c0, VIP, 80, 2, udp=True) == ["b1", "b1"]
    proxy.update([a, u])
    assert lab.connect(c0, VIP, 90, 2) == ["refused"] * 2
    assert lab.connect(c0, VIP, 80, 2) == ["b1", "b1"]
    assert lab.connect(c0, VIP, 80, 2, udp=True) == ["b1", "b1"]


def test_node_port_from_outside_and_node(lab: SvcLab, proxy: ServiceProxy) -> None:
    proxy.full_sync([svc(lab, ["b0", "b2"], node_port=30080)])
    got = Counter(lab.connect(lab.outside, lab.NODE_OUTSIDE_IP, 30080, 30))
    assert set(got) == {"b0", "b2"}, f"{proxy.name}: outside → NodePort: {dict(got)}"
    got = Counter(lab.connect(lab.pods["c0"].ns, lab.pods["c0"].gw, 30080, 10))
    assert set(got) <= {"b0", "b2"} and sum(got.values()) == 10, dict(got)
    # control: a port that is no NodePort is not forwarded
    assert lab.connect(lab.outside, lab.NODE_OUTSIDE_IP, 30081, 1) == ["refused"]


def test_full_sync_repairs_drift(lab: SvcLab, proxy: ServiceProxy) -> None:
    if proxy.name == "userspace":
        pytest.skip("no kernel rules to drift")
    proxy.full_sync([svc(lab, ["b0"])])
    if proxy.name == "nftables":
        run(["nft", "delete", "table", "ip", "podlab-proxy"], netns=lab.node)
    else:
        run(["iptables-legacy", "-t", "nat", "-F", "KUBE-SERVICES"], netns=lab.node)
    assert lab.connect(lab.pods["c0"].ns, VIP, 80, 1) != ["b0"], "drift did not break it"
    proxy.full_sync([svc(lab, ["b0"])])
    assert lab.connect(lab.pods["c0"].ns, VIP, 80, 2) == ["b0", "b0"]


def _dnat_packets(lab: SvcLab, chain: str) -> int:
    out = run(["iptables-legacy", "-t", "nat", "-L", chain, "-v", "-x", "-n"], netns=lab.node)
    return sum(int(line.split()[0]) for line in out.stdout.splitlines() if "DNAT" in line)


def test_iptables_service_added_or_removed_leaves_other_services_chains_alone(
    lab: SvcLab,
) -> None:
    """A Service added or removed rewrites the top-level chains and its own, not
    every service's (kube-proxy's partial sync): the untouched service's SEP chain
    keeps its packet counters, which a rewrite resets — as the full sync (the
    control) shows."""
    p = make_proxy("iptables", ProxyOptions(lab.SERVICE_CIDR, lab.CLUSTER_CIDR, netns=lab.node))
    a = svc(lab, ["b0"])
    b = replace(svc(lab, ["b1"]), name="other", cluster_ip="10.96.0.6")
    c = replace(svc(lab, ["b2"]), name="third", cluster_ip="10.96.0.7")
    (sep_a,) = [ch for ch in iptables.chains_of(a) if ch.startswith("KUBE-SEP-")]
    c0 = lab.pods["c0"].ns
    try:
        p.full_sync([a, b])
        assert lab.connect(c0, VIP, 80, 3) == ["b0"] * 3
        p.update([a, b, c])  # added
        assert lab.connect(c0, "10.96.0.7", 80, 2) == ["b2"] * 2
        p.update([a, c])  # removed
        assert lab.connect(c0, "10.96.0.6", 80, 1) != ["b1"]
        assert not set(iptables.chains_of(b)) & p.existing_chains()
        p.update([a, replace(c, endpoints=())])  # lost all endpoints: refused
        assert lab.connect(c0, "10.96.0.7", 80, 1) == ["refused"]
        assert _dnat_packets(lab, sep_a) == 3, "a's chain was rewritten by another's change"
        assert lab.connect(c0, VIP, 80, 1) == ["b0"]
        p.full_sync([a, c])  # control: a rewrite resets the counters
        assert _dnat_packets(lab, sep_a) == 0
    finally:
        p.close()


@pytest.mark.parametrize("mode", ["nftables", "iptables"])
def test_bridged_pods_spread_and_hairpin(mode: str) -> None:
    """flannel-style pods on cni0: same-bridge client, backend reaching itself."""
    blab = SvcLab.create(backends=3, bridged=True)
    p = make_proxy(mode, ProxyOptions(blab.SERVICE_CIDR, blab.CLUSTER_CIDR, netns=blab.node))
    try:
        names = ["b0", "b1", "b2"]
        p.full_sync([svc(blab, names)])
        got = Counter(blab.connect(blab.pods["c0"].ns, VIP, 80, 150))
        assert set(got) == set(names), f"{mode} on cni0: {dict(got)}"
        got = Counter(blab.connect(blab.pods["b0"].ns, VIP, 80, 30))
        assert "b0" in got and sum(got.values()) == 30, f"{mode} hairpin on cni0: {dict(got)}"
    finally:
        p.close()
        blab.close()


def _entries(lab: SvcLab, ip: str) -> list[str]:
    """conntrack entries of the node whose reply comes from ``ip`` (the DNAT target)."""
    text = run(["cat", "/proc/net/nf_conntrack"], netns=lab.node).stdout
    return [ln for ln in text.splitlines() if f" src={ip} " in ln.split("[UNREPLIED]")[-1]]


def test_syn_sent_entries_to_a_removed_endpoint_are_forgotten(lab: SvcLab) -> None:
    """A silent endpoint (its node down) leaves SYN_SENT entries that would catch a
    new connection reusing their source port; answered flows are kept."""
    p = make_proxy("nftables", ProxyOptions(lab.SERVICE_CIDR, lab.CLUSTER_CIDR, netns=lab.node))
    silent, live = lab.pods["b1"], lab.pods["b0"]
    run(["nft", "-f", "-"], netns=silent.ns,
        input="table ip silence {\n chain in {\n type filter hook input priority 0;\n"
              " tcp dport 8080 drop\n }\n}\n")  # fmt: skip
    try:
        p.full_sync([svc(lab, ["b0"])])
        assert lab.connect(lab.pods["c0"].ns, VIP, 80, 3) == ["b0"] * 3
        p.update([svc(lab, ["b1"])])
        assert set(lab.connect(lab.pods["c0"].ns, VIP, 80, 2)) == {"timeout"}
        stale = [e for e in _entries(lab, silent.ip) if "SYN_SENT" in e]
        assert stale, "control: no SYN_SENT entry towards the silent endpoint"
        time.sleep(conntrack.UNANSWERED_S + 0.5)  # younger ones may be handshakes in flight
        assert conntrack.forget({("tcp", live.ip, 8080)}, netns=lab.node) == 0  # answered: kept
        assert _entries(lab, live.ip), "the answered flows' entries should stay"
        assert conntrack.forget({("tcp", silent.ip, 8080)}, netns=lab.node) >= len(stale)
        assert not [e for e in _entries(lab, silent.ip) if "SYN_SENT" in e]
    finally:
        run(["nft", "delete", "table", "ip", "silence"], netns=silent.ns)
        p.close()
