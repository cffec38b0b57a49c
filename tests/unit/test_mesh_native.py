"""Native cluster mesh (all clusters bgp): AS numbers, who peers with whom, the
node's and the router's BIRD configurations (each checked by ``bird -p``)."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from harness.agent.config import AgentConfig
from harness.agent.datapath.base import Peer
from harness.agent.datapath.bgp import Bgp
from harness.agent.datapath.mesh import MeshLayer
from harness.inventory import build_inventory
from harness.plan import bgp
from harness.plan.build import build_plan, load_plan
from harness.topology import parse_topology
from tests.conftest import REPO

ROLE = REPO / "playbooks" / "roles" / "router"
TWO = REPO / "topologies" / "two-clusters.clab.yml"

# Two routers in a chain: c1 — r1 — (p2p) — r2 — c2, plus c3 (no mesh) on r1's side.
CHAIN = """
name: chain
topology:
  groups:
    c1: {labels: {podlab.cluster: c1, podlab.cluster-id: "7", podlab.mesh: m,
                  podlab.pod-cidr: 10.244.0.0/16, podlab.mode: bgp}}
    c2: {labels: {podlab.cluster: c2, podlab.cluster-id: "9", podlab.mesh: m,
                  podlab.pod-cidr: 10.245.0.0/16, podlab.mode: bgp}}
    c3: {labels: {podlab.cluster: c3, podlab.cluster-id: "3",
                  podlab.pod-cidr: 10.246.0.0/16, podlab.service-cidr: 10.97.0.0/16,
                  podlab.mode: bgp}}
  nodes:
    c1-cp: {group: c1, labels: {podlab.role: control-plane}}
    c2-cp: {group: c2, labels: {podlab.role: control-plane}}
    c3-cp: {group: c3, labels: {podlab.role: control-plane}}
    r1: {labels: {podlab.role: router}}
    r2: {labels: {podlab.role: router}}
    f1: {kind: bridge}
  links:
    - endpoints: [c1-cp:eth1, f1:p1]
    - endpoints: [c3-cp:eth1, f1:p2]
    - endpoints: [r1:eth1, f1:p0]
    - endpoints: [r1:eth2, r2:eth2]
    - endpoints: [c2-cp:eth1, r2:eth1]
"""


def chain() -> Any:
    return build_plan(parse_topology(CHAIN, "chain.clab.yml"))


def test_cluster_and_router_as_numbers() -> None:
    plan = chain()
    assert bgp.cluster_asn(plan.clusters["c1"]) == 64512 + 7  # meshed: unique per cluster
    assert bgp.cluster_asn(plan.clusters["c3"]) == 64512  # no mesh: Calico's default
    assert bgp.router_asns(plan) == {"r1": 65000, "r2": 65001}


def test_nodes_peer_with_the_routers_on_their_segment_only_when_meshed() -> None:
    plan = chain()
    (r,) = bgp.node_routers(plan, "c1-cp")
    assert r["name"] == "r1" and r["as"] == 65000
    assert ipaddress.IPv4Address(r["address"]) in plan.segments["f1"].subnet
    assert bgp.node_routers(plan, "c2-cp")[0]["name"] == "r2"
    assert bgp.node_routers(plan, "c3-cp") == []  # not in a mesh: its own iBGP only


def test_router_settings_list_meshed_nodes_and_neighbour_routers() -> None:
    plan = chain()
    r1 = bgp.router_bgp(plan, "r1")
    assert [n["name"] for n in r1["nodes"]] == ["c1-cp"]  # c3 is in no mesh
    (node,) = r1["nodes"]
    assert node["as"] == 64519 and node["mesh_tag"] == bgp.mesh_tag("m")
    assert 1 <= bgp.mesh_tag("m") <= 65535 and bgp.mesh_tag("m") != bgp.mesh_tag("m2")
    assert [(x["name"], x["as"]) for x in r1["routers"]] == [("r2", 65001)]
    assert r1["pod_cidrs"] == ["10.244.0.0/16", "10.245.0.0/16"]
    assert r1["clusters"] == {"c1": "c1-cp", "c2": "c2-cp"}


def test_inventory_exports_the_fabric() -> None:
    inv = build_inventory(load_plan(TWO), REPO / ".podlab" / "x")["all"]["children"]
    assert inv["c1"]["vars"]["podlab_bgp_as"] == 64513
    assert inv["c2"]["vars"]["podlab_bgp_as"] == 64514
    w1 = inv["c1"]["hosts"]["c1-w1"]
    assert w1["podlab_bgp_routers"] == [{"name": "router", "address": "10.100.1.1", "as": 65000}]
    assert inv["routers"]["hosts"]["router"]["podlab_bgp"]["as"] == 65000
    assert "podlab_bgp" not in inv["external_hosts"]["hosts"]["outside"]
    single = build_inventory(load_plan(REPO / "topologies/single-cluster.clab.yml"), REPO)
    kids = single["all"]["children"]
    assert "podlab_bgp" not in kids["routers"]["hosts"]["router"]  # no mesh, no router BGP
    assert all("podlab_bgp_routers" not in h for h in kids["c1"]["hosts"].values())


def _bird_ok(tmp: Path, text: str) -> None:
    if shutil.which("bird") is None:
        pytest.skip("bird (Debian bird2) is not installed: run make setup")
    conf = tmp / "bird.conf"
    conf.write_text(text)
    res = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, f"bird -p rejects:\n{res.stderr}\n{text}"


def render_router(plan: Any, router: str, modes: dict[str, str], join_dir: Path) -> str:
    """The role's template as Ansible renders it (trim_blocks, regex_replace)."""
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True
    )
    env.filters["regex_replace"] = lambda s, pat, rep: re.sub(pat, rep, s)
    tpl = env.from_string((ROLE / "templates" / "bird.conf.j2").read_text())
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    hostvars = {
        n.name: {"podlab_mode": modes.get(n.cluster or "", "")} for n in plan.nodes.values()
    }
    join_dir.mkdir(exist_ok=True)
    defaults["router_bird_join_dir"] = str(join_dir)
    return tpl.render(podlab_bgp=bgp.router_bgp(plan, router), hostvars=hostvars, **defaults)


def test_router_config_carries_each_clusters_routes_to_the_other(tmp_path: Path) -> None:
    plan = load_plan(TWO)
    text = render_router(plan, "router", {"c1": "bgp", "c2": "bgp"}, tmp_path / "bird.d")
    _bird_ok(tmp_path, text)
    assert text.count("protocol bgp node_") == 6
    w1 = text.split("protocol bgp node_c1_w1")[1].split("\n}")[0]
    assert "neighbor 10.100.1.3 as 64513;" in w1 and "local as 65000;" in w1
    tag = f"(64999, {bgp.mesh_tag('mesh1')})"
    assert "if net ~ [ 10.244.0.0/16{24,32} ] then {" in w1  # only its own cluster's
    assert f"bgp_community.add({tag});" in w1  # tagged with its mesh
    assert f"{tag} ~ bgp_community" in w1 and "!(net ~ [ 10.244.0.0/16+ ])" in w1
    assert f'include "{tmp_path}/bird.d/*.conf";' in text  # sessions of `mesh join`
    assert "export where source = RTS_BGP;" in text.split("protocol kernel")[1].split("}")[0]


def test_router_config_has_no_node_sessions_for_tunnel_clusters(tmp_path: Path) -> None:
    text = render_router(
        load_plan(TWO), "router", {"c1": "vxlan", "c2": "vxlan"}, tmp_path / "bird.d"
    )
    _bird_ok(tmp_path, text)
    assert "protocol bgp" not in text


def test_chained_routers_pass_routes_to_each_other(tmp_path: Path) -> None:
    plan = chain()
    text = render_router(plan, "r1", {"c1": "bgp", "c2": "bgp", "c3": "bgp"}, tmp_path / "bird.d")
    _bird_ok(tmp_path, text)
    r2 = text.split("protocol bgp router_r2")[1].split("\n}")[0]
    assert "as 65001;" in r2 and "10.244.0.0/16+, 10.245.0.0/16+" in r2
    assert "node_c3_cp" not in text


def cfg(**kw: Any) -> AgentConfig:
    base: dict[str, Any] = {
        "node": "c1-w1",
        "cluster": "c1",
        "etcd_endpoints": ["http://127.0.0.1:2379"],
        "pod_cidr": "10.244.0.0/16",
        "underlay_interface": "eth1",
        "underlay_address": "10.100.1.3",
        "mode": "bgp",
        "mesh": "m",
        "bgp_as": 64513,
        "bgp_routers": [{"name": "router", "address": "10.100.1.1", "as": 65000}],
    }
    return AgentConfig.model_validate({**base, **kw})


LOCAL = Peer("c1-w2", ipaddress.IPv4Network("10.244.2.0/24"), ipaddress.IPv4Address("10.100.1.4"),
             "default", {}, "c1")  # fmt: skip
REMOTE = Peer("c2-w1", ipaddress.IPv4Network("10.245.1.0/24"), ipaddress.IPv4Address("10.100.2.3"),
              "f2", {}, "c2")  # fmt: skip


def _render(c: AgentConfig, peers: list[Peer]) -> str:
    dp = Bgp(c, None)  # type: ignore[arg-type]
    dp.subnet = ipaddress.IPv4Network("10.244.1.0/24")
    return dp.render(peers)


def test_node_peers_with_its_router_over_ebgp(tmp_path: Path) -> None:
    text = _render(cfg(), [LOCAL])
    _bird_ok(tmp_path, text)
    fabric = text.split("protocol bgp router_router")[1].split("\n}")[0]
    assert "local 10.100.1.3 as 64513;" in fabric and "neighbor 10.100.1.1 as 65000;" in fabric
    assert 'export where proto = "pods";' in fabric  # its own subnet, nothing learnt
    assert "if net ~ [ 10.244.0.0/16+ ] then reject;" in text  # never its own cluster's
    assert "neighbor 10.100.1.4 as 64513;" in text  # iBGP in the cluster's own AS
    assert "bgp_path.len = 0" in text  # what a router taught is not passed to iBGP peers


def test_node_outside_a_mesh_keeps_plain_ibgp(tmp_path: Path) -> None:
    text = _render(cfg(mesh=None, bgp_as=64512), [LOCAL])
    _bird_ok(tmp_path, text)
    assert "router_" not in text and "neighbor 10.100.1.4 as 64512;" in text


def test_native_layer_sends_remote_peers_to_bird_and_says_when_no_router() -> None:
    c = cfg()
    layer = MeshLayer(Bgp(c, None), c, None)  # type: ignore[arg-type]
    accepted, problems = layer.refuse([LOCAL, REMOTE])
    assert accepted == [LOCAL, REMOTE] and problems == []
    assert layer.peer_objects(REMOTE).routes == []  # BIRD installs them
    assert layer.mtu() == 1500  # native: no overhead
    lonely = cfg(bgp_routers=[])
    lone = MeshLayer(Bgp(lonely, None), lonely, None)  # type: ignore[arg-type]
    _, problems = lone.refuse([LOCAL, REMOTE])
    assert len(problems) == 1 and "no lab router" in problems[0]
    _, problems = lone.refuse([LOCAL])  # nobody remote yet: nothing to say
    assert problems == []


def test_rounds_rotate_and_compare_by_medians() -> None:
    from harness.conformance import meshtput

    order: list[str] = []

    def f(name: str, value: float) -> Any:
        def run() -> float:
            order.append(name)
            return value

        return run

    got = meshtput.interleave([("a", f("a", 1.0)), ("b", f("b", 2.0))], 3)
    assert order == ["a", "b", "b", "a", "a", "b"]  # rotated: nobody always first
    assert got == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}
    cmp = meshtput.Comparison(
        meshtput.Series("a", (1.0, 3.0, 2.0)), meshtput.Series("b", (2.0,) * 3)
    )
    assert cmp.ratio == 1.0 and cmp.rounds_below == 1
    assert meshtput.Series("x", (5.0,)).cv == 0.0
    assert round(meshtput.Series("x", (1.0, 3.0)).cv, 3) == 0.5
    with pytest.raises(ValueError):
        meshtput.interleave([], 0)


def test_a_reference_target_keeps_its_own_server_and_runs_in_its_namespace() -> None:
    from harness.conformance import meshtput

    class FakeNode:
        def __init__(self) -> None:
            self.started: list[list[str]] = []
            self.ran: list[tuple[list[str], float]] = []

        def start(self, argv: list[str], lifetime_s: float) -> None:
            self.started.append(argv)

        def run(self, argv: list[str], timeout_s: float = 30.0) -> str:
            self.ran.append((argv, timeout_s))
            return "ok"

    node = FakeNode()
    targets = [
        meshtput.Target("pod-pod", None, node, "pod-b", "10.244.1.2", 5401),  # type: ignore[arg-type]
        meshtput.Target("hand-built", None, node, "plref-x-pb", "10.255.2.2", 5403, serve=False),  # type: ignore[arg-type]
    ]
    meshtput.start_servers(targets, lifetime_s=1.0)
    # only the lab's server is started: the reference's own (refpath up --server-port) serves
    assert node.started == [["ip", "netns", "exec", "pod-b", "iperf3", "-s", "-p", "5401"]]
    client = meshtput.InNetns(node, "plref-x-pa")  # type: ignore[arg-type]
    assert client.run(["iperf3", "-c", "10.255.2.2"], 7) == "ok"
    assert node.ran == [(["ip", "netns", "exec", "plref-x-pa", "iperf3", "-c", "10.255.2.2"], 7)]
