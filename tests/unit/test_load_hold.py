"""podlab load's hold phase (harness/load/hold.py) against a real etcd."""

from __future__ import annotations

import json
import time

import pytest

from harness.load import hold
from harness.store import Store
from harness.store.keys import node_key, subnet_key
from harness.testlab.etcd import LocalEtcd

CLUSTER = "c1"


@pytest.fixture
def store(etcd: LocalEtcd) -> Store:
    return etcd.store()


def _node(store: Store, name: str, subnet: str, age_s: float) -> None:
    beat = time.time() - age_s
    store.put(node_key(CLUSTER, name), json.dumps({"name": name, "heartbeat": beat}))
    store.put(subnet_key(CLUSTER, subnet), json.dumps({"node": name, "subnet": subnet}))


def test_a_steady_cluster_holds(store: Store) -> None:
    _node(store, "w1", "10.244.0.0/26", 1.0)
    _node(store, "h1", "10.244.0.64/26", 3.0)
    res = hold.hold(store, CLUSTER, ["w1", "h1"], seconds=0.2, every_s=0.1)
    assert res.nodes == 2 and res.leases == 2 and res.samples >= 2
    assert not res.dead and not res.leases_lost
    assert 1.0 <= res.max_heartbeat_age_s < 10


def test_a_stale_heartbeat_a_vanished_node_and_a_lost_lease_are_counted(store: Store) -> None:
    _node(store, "w1", "10.244.0.0/26", 1.0)
    _node(store, "h1", "10.244.0.64/26", 60.0)  # older than the 40 s grace
    _node(store, "h2", "10.244.0.128/26", 1.0)
    _node(store, "h3", "10.244.0.192/26", 1.0)
    _node(store, "h4", "10.244.1.0/26", 1.0)
    calls = []

    def midway(done: int, total: int) -> None:
        if not calls:  # after the first sample: h2's lease expires, h3's goes to another
            store.delete(subnet_key(CLUSTER, "10.244.0.128/26"))
            store.delete(node_key(CLUSTER, "h2"))
            other = {"node": "h9", "subnet": "10.244.0.192/26"}
            store.put(subnet_key(CLUSTER, "10.244.0.192/26"), json.dumps(other))
            # h4's lease expires and h4 claims the same subnet again before the next sample
            store.delete(subnet_key(CLUSTER, "10.244.1.0/26"))
            _node(store, "h4", "10.244.1.0/26", 1.0)
        calls.append(done)

    watched = ["w1", "h1", "h2", "h3", "h4"]
    res = hold.hold(store, CLUSTER, watched, 0.2, every_s=0.1, progress=midway)
    assert res.dead == {"h1", "h2"}
    lost = ("10.244.0.128/26", "10.244.0.192/26", "10.244.1.0/26")
    assert res.leases_lost == {subnet_key(CLUSTER, s) for s in lost}
    assert res.max_heartbeat_age_s >= 60


def test_heartbeat_formats() -> None:
    assert hold.heartbeat_epoch(12.5) == 12.5
    assert hold.heartbeat_epoch("1970-01-01T00:00:10Z") == 10.0
    assert hold.heartbeat_epoch("yesterday") is None
    assert hold.heartbeat_epoch(None) is None


def test_the_runners_tick_lag_during_the_hold_is_read_from_their_records(store: Store) -> None:
    from harness.hollow.beat import LagHistogram, runner_key

    _node(store, "h1", "10.244.0.0/26", 1.0)
    h = LagHistogram()
    for _ in range(100):
        h.observe(5.0, 15.0)  # before the hold: slow beats, not counted
    key = runner_key(CLUSTER, "hollow")
    store.put(key, h.record(lease_lost=1))

    def midway(done: int, total: int) -> None:
        for lag in [0.02] * 98 + [0.8, 16.0]:
            h.observe(lag, 15.0)
        store.put(key, h.record(lease_lost=2))

    res = hold.hold(store, CLUSTER, ["h1"], 0.15, every_s=0.1, progress=midway)
    assert res.runners == 1 and res.beats >= 100 and res.beats % 100 == 0
    assert res.tick_lag_s[50] <= 0.025 and 0.5 < res.tick_lag_s[99] <= 1.0
    assert res.beats_late == res.beats // 100 and res.runner_leases_lost == 1
    assert hold.hold(store, CLUSTER, ["h1"], 0.0).beats == 0, "no beats in between: none"
