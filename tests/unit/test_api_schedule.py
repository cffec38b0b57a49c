"""The spreading scheduler and node readiness."""

from __future__ import annotations

from collections import Counter

from harness.api.objects import NodeRecord
from harness.api.schedule import NODE_READY_WINDOW_S, is_ready, schedulable, spread

NOW = 1_800_000_000.0


def node(name: str, age_s: float | None = 1.0, **extra: object) -> NodeRecord:
    beat = None if age_s is None else NOW - age_s
    return NodeRecord.model_validate({"name": name, "heartbeat": beat, **extra})


def test_spread_balances_a_batch_over_nodes() -> None:
    placed = spread([f"p{i}" for i in range(7)], ["n1", "n2", "n3"], {})
    assert Counter(placed.values()) == Counter({"n1": 3, "n2": 2, "n3": 2})


def test_spread_fills_the_least_loaded_node_first() -> None:
    placed = spread(["a", "b", "c"], ["n1", "n2"], {"n1": 3, "n2": 0, "gone": 9})
    assert placed == {"a": "n2", "b": "n2", "c": "n2"}


def test_spread_breaks_ties_by_name_and_is_deterministic() -> None:
    assert spread(["a", "b"], ["w2", "w1"], {}) == {"a": "w1", "b": "w2"}
    assert spread(["a", "b"], ["w2", "w1"], {}) == spread(["a", "b"], ["w1", "w2"], {})


def test_spread_without_ready_nodes_places_nothing() -> None:
    assert spread(["a"], [], {"n1": 0}) == {}


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


def test_schedulable_prefers_workers_and_skips_stale_or_cordoned_nodes() -> None:
    nodes = [
        node("c1-cp", role="control-plane"),
        node("c1-w1", role="worker"),
        node("c1-w2", 300.0, role="worker"),
        node("c1-w3", unschedulable=True),
    ]
    assert schedulable(nodes, NOW) == ["c1-w1"]


def test_control_plane_takes_pods_when_it_is_the_only_ready_node() -> None:
    nodes = [node("c1-cp", role="control-plane"), node("c1-w1", 300.0)]
    assert schedulable(nodes, NOW) == ["c1-cp"]
