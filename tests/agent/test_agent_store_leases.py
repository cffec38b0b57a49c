"""Subnet leases and etcd access against a real local etcd (no namespaces needed)."""

from __future__ import annotations

import ipaddress
import threading
import time
from pathlib import Path

import pytest

from harness.agent import leases
from harness.agent.config import AgentConfig
from harness.store import Event, Store
from harness.store.keys import cluster_prefix
from harness.testlab.wait import wait_for

pytestmark = pytest.mark.timeout(300)


def _cfg(etcd_url: str, node: str, tmp: Path, **kw: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "node": node,
            "cluster": "c1",
            "etcd_endpoints": [etcd_url],
            "pod_cidr": "10.244.0.0/16",
            "node_prefix": 24,
            "mode": "vxlan",
            "underlay_interface": "eth1",
            "underlay_address": "10.100.0.3",
            "state_dir": str(tmp / node / "state"),
            "run_dir": str(tmp / node / "run"),
            "log_dir": str(tmp / node / "log"),
            "lease_ttl_s": 5,
            **kw,
        }
    )


def test_twenty_concurrent_agents_never_share_a_subnet(etcd, tmp_path: Path) -> None:
    # a small pod CIDR (/19 → 31 usable /24s) makes 20 agents collide often
    cfgs = [_cfg(etcd.url, f"w{i:02d}", tmp_path, pod_cidr="10.244.0.0/19") for i in range(20)]
    got: dict[str, leases.SubnetLease] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(cfgs))

    def agent(cfg: AgentConfig) -> None:
        try:
            store = Store(cfg.etcd_endpoints)
            barrier.wait()
            got[cfg.node] = leases.acquire(store, cfg, {"VtepMAC": cfg.node})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(c,)) for c in cfgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    subnets = [lease.subnet for lease in got.values()]
    assert len(got) == 20 and len(set(subnets)) == 20, sorted(map(str, subnets))
    for a in subnets:
        assert a.subnet_of(ipaddress.IPv4Network("10.244.0.0/19"))
        assert sum(a.overlaps(b) for b in subnets) == 1
    kvs, _ = Store([etcd.url]).get_prefix(cluster_prefix("c1") + "subnets/")
    owners = {kv.json()["subnet"]: kv.json()["node"] for kv in kvs}
    assert owners == {str(lease.subnet): node for node, lease in got.items()}


def test_restart_keeps_subnet_and_lease_and_writes_flannel_env(etcd, tmp_path: Path) -> None:
    store = Store([etcd.url])
    cfg = _cfg(etcd.url, "w1", tmp_path)
    first = leases.acquire(store, cfg, {})
    again = leases.acquire(store, cfg, {})  # as a restarted agent would
    assert (again.subnet, again.lease_id) == (first.subnet, first.lease_id)
    path = leases.write_subnet_env(cfg, again, 1450)
    gw = first.subnet.network_address + 1
    assert path.read_text() == (
        f"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={gw}/24\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    # the etcd lease expired while the node was down: same subnet, new lease
    store.revoke(first.lease_id)
    third = leases.acquire(store, cfg, {})
    assert third.subnet == first.subnet and third.lease_id != first.lease_id


def test_expired_lease_frees_the_subnet(etcd, tmp_path: Path) -> None:
    store = Store([etcd.url])
    cfg = _cfg(etcd.url, "gone", tmp_path, lease_ttl_s=3)
    lease = leases.acquire(store, cfg, {})
    prefix = cluster_prefix("c1") + "subnets/"
    assert len(store.get_prefix(prefix)[0]) == 1
    wait_for("lease expiry", lambda: not store.get_prefix(prefix)[0])
    assert store.refresh(lease.lease_id) == -1


def test_watch_resumes_after_etcd_restart_and_relists_after_compaction(etcd) -> None:
    store = Store([etcd.url], timeout=2)
    prefix = "/podlab/v1/w/"
    seen: dict[str, bytes] = {}
    resets: list[int] = []
    delivered: list[tuple[str, int]] = []  # every event, in order (a replay shows twice)

    def on_events(events: list[Event]) -> None:
        delivered.extend((e.kv.key, e.kv.mod_revision) for e in events)
        for e in events:
            if e.type == "DELETE":
                seen.pop(e.kv.key, None)
            else:
                seen[e.kv.key] = e.kv.value

    def on_reset(kvs: list) -> None:
        resets.append(len(kvs))
        seen.clear()
        seen.update({kv.key: kv.value for kv in kvs})

    store.put(prefix + "a", "1")
    stop = threading.Event()
    t = threading.Thread(
        target=store.watch_prefix, args=(prefix, on_events, on_reset, stop), daemon=True
    )
    t.start()
    try:
        wait_for("initial list", lambda: seen.get(prefix + "a") == b"1")
        store.put(prefix + "b", "2")
        wait_for("event b", lambda: seen.get(prefix + "b") == b"2")
        etcd.stop()
        time.sleep(1.5)
        etcd.start()
        writer = Store([etcd.url])
        writer.put(prefix + "c", "3")
        writer.delete(prefix + "a")
        wait_for("events after restart", lambda: set(seen) == {prefix + "b", prefix + "c"})
        assert resets == [1], "resumed from a revision; must not re-list after a restart"
        # resumed after the last event delivered, not from where the stream began: the
        # old loop handed b's put over again after the restart (a replay of history)
        assert [k for k, _ in delivered] == [prefix + "b", prefix + "c", prefix + "a"]
        assert len(set(delivered)) == len(delivered), f"delivered twice: {delivered}"
    finally:
        stop.set()


def test_watch_from_a_compacted_revision_relists(etcd) -> None:
    store = Store([etcd.url], timeout=2)
    prefix = "/podlab/v1/w/"
    first = store.put(prefix + "a", "1")
    for i in range(5):
        store.put(prefix + "b", str(i))
    rev = store.put(prefix + "c", "x")
    store.delete(prefix + "a")
    store._post("/kv/compaction", {"revision": rev, "physical": True})
    resets: list[dict[str, bytes]] = []
    stop = threading.Event()
    t = threading.Thread(
        target=store.watch_prefix,
        args=(
            prefix,
            lambda ev: None,
            lambda kvs: resets.append({k.key: k.value for k in kvs}),
            stop,
        ),
        kwargs={"start_revision": first + 1},  # a revision etcd no longer has
        daemon=True,
    )
    t.start()
    try:
        wait_for("re-list after compaction", lambda: resets)
        assert resets[0] == {prefix + "b": b"4", prefix + "c": b"x"}
    finally:
        stop.set()


def test_idle_watch_reopens_quietly_and_misses_nothing(etcd, monkeypatch, caplog) -> None:
    from harness.store import watch as store_mod

    monkeypatch.setattr(store_mod, "IDLE_S", 0.5)
    store = Store([etcd.url], timeout=2)
    prefix = "/podlab/v1/idle/"
    seen: list[str] = []
    stop = threading.Event()
    t = threading.Thread(
        target=store.watch_prefix,
        args=(prefix, lambda ev: seen.extend(e.kv.key for e in ev), lambda kvs: None, stop),
        daemon=True,
    )
    caplog.set_level("DEBUG", logger="podlab.store")
    t.start()
    try:
        time.sleep(1.6)  # several idle periods
        store.put(prefix + "x", "1")
        wait_for("event after idle periods", lambda: seen == [prefix + "x"])
        assert any("idle" in r.getMessage() for r in caplog.records)
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
    finally:
        stop.set()
