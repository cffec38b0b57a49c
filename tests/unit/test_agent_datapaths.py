"""Pure parts of the agent: desired objects per mode, leases maths, nft, pod specs."""

from __future__ import annotations

import ipaddress

from harness.agent import leases, nft
from harness.agent.config import AgentConfig
from harness.agent.datapath import registry
from harness.agent.datapath.base import FdbSpec, NeighSpec, Peer, PodInterface, RouteSpec
from harness.agent.datapath.hostgw import HostGw
from harness.agent.datapath.udp import Udp
from harness.agent.datapath.vxlan import Vxlan
from harness.agent.pods import PodSpec, PodState, netns_name, status_json
from harness.agent.procs import Probe
from harness.cni import bridged

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address


def cfg(**kw: object) -> AgentConfig:
    base = {
        "node": "c1-w1",
        "cluster": "c1",
        "etcd_endpoints": ["http://10.100.0.2:2379"],
        "pod_cidr": "10.244.0.0/16",
        "underlay_interface": "eth1",
        "underlay_address": "10.100.0.3",
        "segment": "fabric",
    }
    return AgentConfig.model_validate(base | kw)


PEER = Peer(
    "c1-w2", N("10.244.2.0/24"), A("10.100.0.4"), "fabric", {"VtepMAC": "0e:00:00:00:00:02"}
)
FAR = Peer("c1-w9", N("10.244.9.0/24"), A("10.200.0.9"), "edge", {})


def test_host_gw_routes_via_peer_underlay_and_refuses_other_segments() -> None:
    dp = HostGw(cfg(mode="host-gw"), None)  # type: ignore[arg-type]
    assert dp.mtu() == 1500 and dp.pod_interface is PodInterface.BRIDGED
    assert dp.peer_objects(PEER).routes == [RouteSpec(N("10.244.2.0/24"), A("10.100.0.4"), "eth1")]
    ok, problems = dp.refuse([PEER, FAR])
    assert ok == [PEER]
    assert len(problems) == 1
    assert "c1-w9 (10.200.0.9, segment edge)" in problems[0] and "c1-w2" not in problems[0]


def test_vxlan_objects_follow_flannels_design() -> None:
    dp = Vxlan(cfg(), None)  # type: ignore[arg-type]
    assert dp.mtu() == 1450 and dp.device == "flannel.1"
    objs = dp.peer_objects(PEER)
    gw = A("10.244.2.0")
    assert objs.routes == [RouteSpec(N("10.244.2.0/24"), gw, "flannel.1", onlink=True)]
    assert objs.neighs == [NeighSpec("flannel.1", gw, "0e:00:00:00:00:02")]
    assert objs.fdbs == [FdbSpec("flannel.1", "0e:00:00:00:00:02", A("10.100.0.4"))]
    # the VTEP MAC is stable per node and locally administered unicast
    mac = dp.backend_data()["VtepMAC"]
    assert mac == Vxlan(cfg(), None).backend_data()["VtepMAC"]  # type: ignore[arg-type]
    assert mac != Vxlan(cfg(node="c1-w2"), None).backend_data()["VtepMAC"]  # type: ignore[arg-type]
    assert int(mac[:2], 16) & 0b11 == 0b10
    assert dp.peer_objects(FAR).routes == []  # a peer without a VTEP gets nothing


def test_udp_mtu_and_routes() -> None:
    dp = Udp(cfg(mode="udp", underlay_mtu=9000), None)  # type: ignore[arg-type]
    assert dp.mtu() == 8972
    assert dp.peer_objects(PEER).routes == [RouteSpec(N("10.244.2.0/24"), None, "flannel0")]


def test_registry_is_explicit_and_covers_every_configurable_mode() -> None:
    # Calico modes arrived with issue 5 (tests/unit/test_calico_datapaths.py)
    assert set(registry.DATAPATHS) == {
        "host-gw",
        "vxlan",
        "udp",
        "bgp",
        "ipip",
        "calico-vxlan",
        "cross-subnet",
    }


def test_candidate_subnets_skip_the_first_and_fit_the_cidr() -> None:
    subs = leases.candidate_subnets(cfg(pod_cidr="10.244.0.0/22", node_prefix=24))
    assert subs == [N("10.244.1.0/24"), N("10.244.2.0/24"), N("10.244.3.0/24")]


def test_masquerade_ruleset_is_one_atomic_document() -> None:
    doc = nft.masquerade_ruleset(N("10.244.0.0/16"))["nftables"]
    verbs = [next(iter(c)) for c in doc]
    assert verbs[:4] == ["metainfo", "add", "delete", "add"]  # replace the table atomically
    rules = [c["add"]["rule"] for c in doc if "rule" in c.get("add", {})]
    assert [next(iter(r["expr"][-1])) for r in rules] == ["return", "masquerade"]
    assert rules[1]["expr"][1]["match"]["op"] == "!="


def test_tunnel_packets_skip_conntrack_only_for_encapsulating_modes() -> None:
    from ipaddress import IPv4Address

    from harness.agent.datapath.base import Tunnel

    me = IPv4Address("10.100.0.2")
    plain = nft.masquerade_ruleset(N("10.244.0.0/16"), tunnels=[], underlay=me,
                                   underlay_dev="eth1")["nftables"]  # fmt: skip
    assert not [
        c for c in plain if "chain" in c.get("add", {}) and "raw" in c["add"]["chain"]["name"]
    ]
    # no tunnel: the underlay table is removed (add + delete), not left behind
    assert [next(iter(c)) for c in plain if c.get(next(iter(c)), {}).get("table", {}) == {
        "family": "netdev", "name": nft.UNDERLAY_TABLE}] == ["add", "delete"]  # fmt: skip
    doc = nft.masquerade_ruleset(
        N("10.244.0.0/16"),
        tunnels=[Tunnel("udp", 8472), Tunnel("ipip")],
        underlay=me,
        service_cidr=N("10.96.0.0/16"),
        underlay_dev="eth1",
    )["nftables"]
    chains = {
        c["add"]["chain"]["name"]: c["add"]["chain"] for c in doc if "chain" in c.get("add", {})
    }
    # out: an output hook (never passed by a forwarded pod packet); in: the underlay
    # interface's ingress hook (never passed by a pod packet): no prerouting chain
    assert set(chains) == {"postrouting", "raw-output", "raw-ingress"}
    assert chains["raw-output"]["prio"] == -300 and chains["raw-output"]["hook"] == "output"
    ingress = chains["raw-ingress"]
    assert (ingress["family"], ingress["hook"], ingress["dev"]) == ("netdev", "ingress", "eth1")
    rules = [c["add"]["rule"] for c in doc if "rule" in c.get("add", {})]

    def shape(rule: dict) -> list[tuple[str, str, object]]:  # type: ignore[type-arg]
        return [(e["match"]["left"]["payload"]["field"], e["match"]["op"],
                 e["match"]["right"] if not isinstance(e["match"]["right"], dict) else "net")
                for e in rule["expr"] if "match" in e]  # fmt: skip

    pre = [shape(r) for r in rules if r["chain"] == "raw-ingress"]
    out = [shape(r) for r in rules if r["chain"] == "raw-output"]
    assert pre == [[("daddr", "==", "10.100.0.2"), ("dport", "==", 8472)],
                   [("daddr", "==", "10.100.0.2"), ("protocol", "==", 4)]]  # fmt: skip
    # out: from us, never to a Service address (DNAT needs conntrack), to or from the port
    assert out[0] == [("saddr", "==", "10.100.0.2"), ("daddr", "!=", "net"), ("dport", "==", 8472)]
    assert out[1][-1] == ("sport", "==", 8472) and out[2][-1] == ("protocol", "==", 4)
    assert all("notrack" in r["expr"][-1] for r in rules if r["chain"].startswith("raw"))


def test_pod_spec_and_status() -> None:
    obj = {
        "metadata": {"name": "web", "namespace": "prod", "uid": "u1"},
        "spec": {
            "nodeName": "c1-w1",
            "containers": [
                {"name": "c", "image": "ignored", "command": ["python", "-m", "x"], "args": ["--y"]}
            ],
        },
    }
    spec = PodSpec.from_object(obj)
    assert spec.command == ("python", "-m", "x", "--y") and spec.namespace == "prod"
    bare = PodSpec.from_object({"metadata": {"name": "p"}, "spec": {"containers": [{}]}})
    assert bare.command == ("sleep", "infinity") and bare.namespace == "default"
    netns = netns_name("prod", "web")
    veth = bridged.host_if_name("prod/web")
    assert netns == "pod-prod-web" and veth.startswith("veth") and len(veth) <= 15
    st = PodState(
        "prod",
        "web",
        "u1",
        "10.244.1.2",
        netns,
        veth,
        phase="Running",
        network_ready_time="2026-01-01T00:00:00.123456Z",
        ready=True,
    )
    status = status_json(st, "10.100.0.3")
    assert status["phase"] == "Running" and status["podIP"] == "10.244.1.2"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


def test_restart_policy_and_readiness_probe_are_read_from_the_pod() -> None:
    obj = {
        "metadata": {"name": "web"},
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [
                {
                    "name": "web",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"}},
                }
            ],
        },
    }
    spec = PodSpec.from_object(obj)
    assert spec.restart_policy == "OnFailure" and spec.container == "web"
    assert spec.readiness == Probe("http", 8080, "/healthz")
    obj["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 9000}}
    assert PodSpec.from_object(obj).readiness == Probe("tcp", 9000, "/")
    assert PodSpec.from_object({"metadata": {"name": "x"}, "spec": {}}).restart_policy == "Always"
