"""Pure parts of the cluster mesh: join-time rules, remote peers in the datapath,
cross-cluster policy selection, the inventory's mesh variables, the key layout."""

from __future__ import annotations

import ipaddress
from typing import Any

from harness.agent import policy
from harness.agent.config import AgentConfig
from harness.agent.datapath.base import Peer, RouteSpec
from harness.agent.datapath.mesh import MESH_DEVICE, MeshLayer
from harness.agent.datapath.vxlan import Vxlan
from harness.agent.svcindex import ServicesIndex
from harness.inventory import build_inventory
from harness.mesh import keys
from harness.mesh.membership import refusal
from harness.plan.build import load_plan
from tests.conftest import REPO

C1 = {
    "name": "c1",
    "id": 1,
    "mesh": "m",
    "podCIDR": "10.244.0.0/16",
    "mode": "vxlan",
    "routing": "tunnel",
    "encryption": "none",
    "caFingerprint": "sha256:aa",
}


def info(**kw: Any) -> dict[str, Any]:
    return {**C1, "name": "c2", "id": 2, "podCIDR": "10.245.0.0/16", **kw}


def test_join_rules_accept_a_good_peer_and_refuse_each_broken_rule() -> None:
    assert refusal(C1, "c2", info(), {}) is None
    assert "exports no clusterinfo" in (refusal(C1, "c2", None, {}) or "")
    assert "belongs to cluster 'c9'" in (refusal(C1, "c2", info(name="c9"), {}) or "")
    assert "is in mesh 'x'" in (refusal(C1, "c2", info(mesh="x"), {}) or "")
    dup = refusal(C1, "c2", info(id=1), {})
    assert dup and "cluster id 1, already used by cluster c1" in dup
    over = refusal(C1, "c2", info(podCIDR="10.244.128.0/17"), {})
    assert over and "overlaps cluster c1" in over and "fix:" in over
    third = refusal(C1, "c3", info(name="c3", id=3, podCIDR="10.245.1.0/24"), {"c2": info()})
    assert third and "overlaps cluster c2" in third
    assert "native routing" in (refusal(C1, "c2", info(mode="bgp", routing="native"), {}) or "")
    assert "encryption wireguard" in (refusal(C1, "c2", info(encryption="wireguard"), {}) or "")
    assert "another mesh CA" in (refusal(C1, "c2", info(caFingerprint="sha256:bb"), {}) or "")


def test_exported_keys_and_mirror_layout() -> None:
    for rel in ("clusterinfo", "nodes/n", "subnets/10.0.0.0-24", "podstatus/default/p"):
        assert keys.is_exported(rel), rel
    for rel in ("mesh/c2/nodes/n", "policies/default/p", "serviceips/10.96.0.1", "heartbeat"):
        assert not keys.is_exported(rel), rel
    key = keys.mirror_key("c1", "c2", "services/default/web")
    assert key == "/podlab/v1/c1/mesh/c2/services/default/web"
    assert keys.split_mirror_key("c1", key) == ("c2", "services/default/web")
    assert keys.split_mirror_key("c1", keys.status_key("c1", "c2")) is None


def cfg(**kw: Any) -> AgentConfig:
    base: dict[str, Any] = {
        "node": "c1-w1",
        "cluster": "c1",
        "etcd_endpoints": ["http://127.0.0.1:2379"],
        "pod_cidr": "10.244.0.0/16",
        "underlay_interface": "eth1",
        "underlay_address": "10.100.1.3",
        "mesh": "m",
    }
    return AgentConfig.model_validate({**base, **kw})


def peer(cluster: str, subnet: str, **backend: Any) -> Peer:
    net = ipaddress.IPv4Network(subnet)
    return Peer(f"{cluster}-w1", net, ipaddress.IPv4Address("10.100.2.3"), "f2", backend, cluster)


def test_tunnel_mesh_routes_remote_nodes_through_the_mesh_device() -> None:
    c = cfg(mode="host-gw")
    layer = MeshLayer(Vxlan(c, None), c, None)  # type: ignore[arg-type]
    remote = peer("c2", "10.245.1.0/24", MeshVtepMAC="0e:00:00:00:00:02")
    local = Peer(
        "c1-w2",
        ipaddress.IPv4Network("10.244.2.0/24"),
        ipaddress.IPv4Address("10.100.1.4"),
        "f1",
        {"VtepMAC": "0e:00:00:00:00:01"},
    )
    keyless = peer("c3", "10.246.1.0/24")
    accepted, problems = layer.refuse([local, remote, keyless])
    assert accepted == [local, remote] and "c3/c3-w1" in problems[0]
    objs = layer.peer_objects(remote)
    gw = ipaddress.IPv4Address("10.245.1.0")
    assert objs.routes == [RouteSpec(remote.subnet, gw, MESH_DEVICE, onlink=True)]
    assert str(objs.fdbs[0].dst) == "10.100.2.3"
    assert layer.peer_objects(local).routes[0].dev == "flannel.1"  # the mode's own path
    assert layer.mtu() == 1450  # pod MTU fits the VXLAN path across clusters
    assert "MeshVtepMAC" in layer.backend_data()


def test_native_and_encrypted_meshes_add_no_tunnel() -> None:
    native = cfg(mode="bgp")
    assert MeshLayer(Vxlan(native, None), native, None).tunnel is None  # type: ignore[arg-type]
    enc = cfg(mode="vxlan", encryption="wireguard")
    assert MeshLayer(Vxlan(enc, None), enc, None).tunnel is None  # type: ignore[arg-type]


def test_remote_pods_are_policy_peers_only_when_the_selector_names_a_cluster() -> None:
    local = policy.pods_from_store(
        [{"metadata": {"name": "db", "namespace": "default", "labels": {"app": "db"}}}],
        {("default", "db"): {"podIP": "10.244.1.5"}},
        "c1",
    )
    remote = policy.remote_pods(
        "c2",
        [{"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}}}],
        {("default", "web"): {"podIP": "10.245.1.7"}},
    )
    assert local[0].labels[policy.CLUSTER_LABEL] == "c1"
    assert remote[0].labels == {"app": "web", policy.CLUSTER_LABEL: "c2"}
    pods = local + remote

    def allowed(sel: dict[str, Any]) -> str:
        pol = {
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [sel]}]},
        }
        return policy.ruleset([pol], pods, {}, {("default", "db")})

    from_c2 = {"podSelector": {"matchLabels": {"app": "web", policy.CLUSTER_LABEL: "c2"}}}
    assert "10.245.1.7" in allowed(from_c2)
    # control: the same selector without the cluster means this cluster only
    assert "10.245.1.7" not in allowed({"podSelector": {"matchLabels": {"app": "web"}}})
    # and naming another cluster does not let c2's pod in
    other = {"podSelector": {"matchLabels": {"app": "web", policy.CLUSTER_LABEL: "c3"}}}
    assert "10.245.1.7" not in allowed(other)
    anywhere = {
        "podSelector": {"matchExpressions": [{"key": policy.CLUSTER_LABEL, "operator": "Exists"}]}
    }
    assert "10.245.1.7" in allowed(anywhere)


def test_services_index_records_mirrored_objects_and_ignores_what_it_does_not_need() -> None:
    """Mirrored pods, statuses and services feed policy peers and global services alike;
    what neither needs (subnet leases, clusterinfo, the syncer's record) costs no pass."""
    idx = ServicesIndex("c1")
    pod = {"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}}}
    assert idx.record("mesh/c2/pods/default/web", pod)
    assert idx.record("mesh/c2/podstatus/default/web", {"podIP": "10.245.1.7"})
    assert idx.record("mesh/c2/services/default/web", {"metadata": {"name": "web"}})
    assert not idx.record("mesh/c2/subnets/10.245.1.0-24", {"subnet": "10.245.1.0/24"})
    assert not idx.record("mesh/c2/clusterinfo", {"podCIDR": "10.245.0.0/16"})
    assert not idx.record("mesh/c2/status", {"connected": True})
    assert not idx.record("mesh/c1/pods/default/me", pod)  # ourselves, mirrored: ignored
    c2 = idx.remotes["c2"]
    assert c2.pod(("default", "web")) == pod and c2.status == {"connected": True}
    assert set(idx.remotes) == {"c2"}


def test_inventory_names_each_clusters_mesh_peers() -> None:
    plan = load_plan(REPO / "topologies/two-clusters.clab.yml")
    inv = build_inventory(plan, REPO / ".podlab" / "x")
    c1 = inv["all"]["children"]["c1"]["vars"]
    assert c1["podlab_mesh"] == "mesh1"
    assert c1["podlab_mesh_peers"] == [{"name": "c2", "endpoint": "https://10.100.2.2:32379"}]
    assert c1["podlab_mesh_export_endpoint"] == "https://10.100.1.2:32379"
    single = build_inventory(load_plan(REPO / "topologies/single-cluster.clab.yml"), REPO)
    assert "podlab_mesh" not in single["all"]["children"]["c1"]["vars"]


def test_policy_hooks_forward_only_while_a_policy_selects_a_local_pod() -> None:
    """No policy for this node's pods: no forward base chain for every packet to pass."""
    pods = [policy.PodInfo("default", "db", "10.244.1.5", {"app": "db"}),
            policy.PodInfo("default", "web", "10.244.2.5", {"app": "web"})]  # fmt: skip
    deny = {
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}}},
    }
    assert "hook forward" not in policy.ruleset([], pods, {})
    # selects only a pod of another node: still nothing to enforce here
    assert "hook forward" not in policy.ruleset([deny], pods, {}, {("default", "web")})
    doc = policy.ruleset([deny], pods, {}, {("default", "db")})
    assert "type filter hook forward" in doc and "10.244.1.5 : jump in-" in doc
