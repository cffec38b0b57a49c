"""Node readiness, and the scheduler's filter and spread (harness/kube/scheduling.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from harness.api.objects import NodeRecord
from harness.api.schedule import NODE_READY_WINDOW_S, is_ready
from harness.kube.scheduling import NodeInfo, choose

NOW = 1_800_000_000.0


def node(name: str, age_s: float | None = 1.0, **extra: object) -> NodeRecord:
    beat = None if age_s is None else NOW - age_s
    return NodeRecord.model_validate({"name": name, "heartbeat": beat, **extra})


def info(name: str, age_s: float | None = 1.0, **extra: Any) -> NodeInfo:
    beat = None if age_s is None else NOW - age_s
    return NodeInfo.from_record({"name": name, "heartbeat": beat, **extra}, NOW)


def pod(cpu: str | None = None, owner: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {"name": "c"}
    if cpu:
        c["resources"] = {"requests": {"cpu": cpu}}
    meta: dict[str, Any] = {"name": "p"}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "uid": owner, "controller": True}]
    return {"metadata": meta, "spec": {"containers": [c]}}


def test_ready_follows_heartbeat_age() -> None:
    assert is_ready(node("n", 1.0), NOW)
    assert is_ready(node("n", NODE_READY_WINDOW_S), NOW)
    assert not is_ready(node("n", NODE_READY_WINDOW_S + 1), NOW)
    assert not is_ready(node("n", None), NOW)


def test_ready_reads_rfc3339_heartbeats() -> None:
    fresh = NodeRecord(name="n", heartbeat="2027-01-15T08:00:00Z")
    stamp = NOW  # 2027-01-15T08:00:00Z
    assert is_ready(fresh, stamp + 5)
    assert not is_ready(fresh, stamp + 120)
    assert not is_ready(NodeRecord(name="n", heartbeat="yesterday"), stamp)


def test_pods_without_requests_spread_evenly_and_ties_go_by_name() -> None:
    nodes = [info("n3"), info("n1"), info("n2")]
    placed = [choose(pod(), nodes)[0] for _ in range(7)]
    assert Counter(n.name for n in placed if n) == Counter({"n1": 3, "n2": 2, "n3": 2})
    assert placed[0] is not None and placed[0].name == "n1"


def test_replicas_of_one_controller_spread_over_nodes_before_capacity_decides() -> None:
    nodes = [info("big", allocatable={"cpu": "8"}), info("small", allocatable={"cpu": "2"})]
    first = choose(pod("100m", owner="rs1"), nodes)[0]
    second = choose(pod("100m", owner="rs1"), nodes)[0]
    assert first and second and {first.name, second.name} == {"big", "small"}


def test_requests_must_fit_and_the_refusal_reads_like_kube_scheduler() -> None:
    nodes = [
        info("c1-cp", role="control-plane", allocatable={"cpu": "2"}),
        info("c1-w1", allocatable={"cpu": "1"}),
        info("c1-w2", allocatable={"cpu": "1"}),
        info("c1-w3", 300.0),
        info("c1-w4", unschedulable=True),
    ]
    assert choose(pod("600m"), nodes)[0] is not None
    assert choose(pod("600m"), nodes)[0] is not None
    chosen, why = choose(pod("600m"), nodes)
    assert chosen is None
    assert why == (
        "0/5 nodes are available: 1 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: }, 1 node(s) had untolerated taint "
        "{node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable, 2 Insufficient cpu."
    )


def test_a_control_plane_takes_pods_only_when_no_worker_is_ready() -> None:
    nodes = [info("c1-cp", role="control-plane"), info("c1-w1", 300.0)]
    chosen, _ = choose(pod(), nodes)
    assert chosen is not None and chosen.name == "c1-cp"
