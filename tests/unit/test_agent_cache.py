"""The agent's subnet-lease caches parse each lease once, when it arrives.

The reconciler reuses what it derived for a Peer object it was handed before
(harness/agent/reconcile.py), so an unchanged lease must keep its Peer, and a
changed one must get a new one.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from harness.agent.cache import MeshCache, PeerCache
from harness.store import KV, Event
from harness.store.keys import mesh_prefix


def lease(node: str, i: int) -> dict[str, Any]:
    return {"node": node, "subnet": f"10.244.{i}.0/24", "underlayIP": f"10.0.0.{i}"}


def put(key: str, value: dict[str, Any] | str) -> Event:
    raw = value if isinstance(value, str) else json.dumps(value)
    return Event("PUT", KV(key, raw.encode()))


def test_unchanged_leases_keep_their_peer_and_the_own_lease_is_skipped() -> None:
    cache = PeerCache(threading.Event(), skip_node="me")
    cache.reset([KV(f"s/{i}", json.dumps(lease(f"n{i}", i)).encode()) for i in range(3)])
    cache.events([put("s/9", lease("me", 9))])
    first = {p.node: p for p in cache.peers()}
    assert sorted(first) == ["n0", "n1", "n2"]

    cache.events([put("s/1", lease("n1", 7)), put("s/3", "{not json"), put("s/4", {"node": "x"})])
    cache.events([Event("DELETE", KV("s/2", b""))])
    now = {p.node: p for p in cache.peers()}
    assert sorted(now) == ["n0", "n1"]  # n2 deleted; the broken and incomplete leases skipped
    assert now["n0"] is first["n0"]
    assert now["n1"] is not first["n1"] and str(now["n1"].subnet) == "10.244.7.0/24"


def test_mirrored_leases_name_their_cluster_and_clusterinfo_is_no_peer() -> None:
    pre = mesh_prefix("c1")
    cache = MeshCache(threading.Event(), "c1")
    cache.reset(
        [
            KV(f"{pre}c2/subnets/10.245.1.0-24", json.dumps(lease("c2-w1", 1)).encode()),
            KV(f"{pre}c2/clusterinfo", json.dumps({"podCIDR": "10.245.0.0/16"}).encode()),
            KV(f"{pre}c2/pods/default/a", json.dumps({"kind": "Pod"}).encode()),
        ]
    )
    (peer,) = cache.peers()
    assert (peer.node, peer.cluster) == ("c2-w1", "c2")
    assert [str(c) for c in cache.pod_cidrs()] == ["10.245.0.0/16"]
