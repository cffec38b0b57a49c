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
