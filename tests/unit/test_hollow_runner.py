"""The hollow runner's heartbeat against a real etcd: one lease and about one transaction
per tick for all nodes, the agents' period kept, the tick lag published, a lost lease
recovered with the same subnets, a dropped node gone for good, pod statuses batched.

Calls are counted on the real client (a subclass that counts each gateway request),
not mocked. The runner uses lease_ttl_s 4: a 1 s heartbeat and a 0.25 s tick.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from harness.hollow.beat import LE, LagHistogram, next_due, runner_key, tick_s
from harness.hollow.model import HollowConfig
from harness.hollow.runner import Runner, on_time
from harness.store import Store
from harness.store.keys import nodes_prefix, pod_key, podstatus_key, subnets_prefix

pytestmark = pytest.mark.timeout(120)
NODES = 300


class CountingStore(Store):
    """The real client, counting each request by gateway path."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.calls: collections.Counter[str] = collections.Counter()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls[path] += 1
        return super()._post(path, body)


def cfg(url: str, nodes: int = NODES) -> HollowConfig:
    return HollowConfig(
        cluster="t1", etcd_endpoints=[url], nodes=nodes, underlay_ip="10.0.0.9",
        pod_cidr="10.0.0.0/14", node_prefix=24, lease_ttl_s=4,
    )  # fmt: skip


def records(store: Store, prefix: str) -> dict[str, dict[str, Any]]:
    return {kv.key.rsplit("/", 1)[1]: kv.json() for kv in store.get_prefix(prefix)[0]}


async def until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := await asyncio.to_thread(check)):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        await asyncio.sleep(0.1)
    return got


def with_runner(runner: Runner, body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await until("every node registered", runner.ready.is_set, 60)
            await body()
        finally:
            stop.set()
            await task

    asyncio.run(main())


def test_one_lease_and_one_transaction_per_tick_keep_every_nodes_period(etcd) -> None:
    store = CountingStore([etcd.url])
    runner = Runner(cfg(etcd.url), store=store)

    async def body() -> None:
        first = {kv.key: kv.mod_revision for kv in store.get_prefix(nodes_prefix("t1"))[0]}
        assert len(first) == NODES
        leases = {kv.lease for kv in store.get_prefix(nodes_prefix("t1"))[0]}
        leases |= {kv.lease for kv in store.get_prefix(subnets_prefix("t1"))[0]}
        assert leases == {runner.lease_id}, "every record and subnet on the runner's one lease"
        store.calls.clear()
        t0, ticks0 = time.monotonic(), runner.ticks
        await asyncio.sleep(4.5)  # longer than the lease TTL: kept alive
        ticks = runner.ticks - ticks0
        calls = dict(store.calls)
        now = {kv.key: kv.mod_revision for kv in store.get_prefix(nodes_prefix("t1"))[0]}
        assert now.keys() == first.keys(), "no record lost in a TTL and more"
        beats = collections.Counter(k for k in now if now[k] != first[k])
        assert len(beats) == NODES, "every node beat in 4.5 s (period 1 s)"
        # the old runner: 2 calls per node per second, 2,700 here; now: per tick, one
        # keepalive and one transaction (300 nodes / 4 ticks per period < 128 puts)
        per_tick = sum(calls.values()) / max(1, ticks)
        assert ticks >= 4, (ticks, time.monotonic() - t0)
        assert per_tick <= 3.0, (calls, ticks)
        assert calls.get("/lease/keepalive", 0) <= ticks + 1, calls

    with_runner(runner, body)
    # SIGTERM's path (release): one revoke, every record and subnet gone at once
    assert records(store, nodes_prefix("t1")) == {}
    assert records(store, subnets_prefix("t1")) == {}


def test_tick_lag_is_published_and_a_lost_lease_is_recovered_with_the_same_subnets(
    etcd,
) -> None:
    store = Store([etcd.url])
    runner = Runner(cfg(etcd.url, 20), store=store)

    async def body() -> None:
        key = runner_key("t1", "hollow")
        rec = await until("the runner's record", lambda: store.get(key))
        got = rec.json()
        assert got["nodes"] == 20 and got["heartbeat_s"] == 1.0 and got["tick_s"] == 0.25
        assert got["le"] == list(LE) and got["counts"][-1] == got["count"] > 0
        assert got["lease_lost"] == 0
        subnets = {n: r["podCIDR"] for n, r in records(store, nodes_prefix("t1")).items()}
        # the lease lost (what a runner starved past its TTL sees): everything bound
        # to it vanishes; the runner claims the same subnets again and re-registers
        old = runner.lease_id
        await asyncio.to_thread(store.revoke, old)
        assert records(store, nodes_prefix("t1")) == {}
        back = await until(
            "every node back",
            lambda: len(r := records(store, nodes_prefix("t1"))) == 20 and r,
        )
        assert {n: r["podCIDR"] for n, r in back.items()} == subnets
        assert runner.lease_id != old
        await until(
            "the loss counted",
            lambda: (r := store.get(key)) is not None and r.json()["lease_lost"] == 1,
        )

    with_runner(runner, body)


def test_a_dropped_node_is_not_written_again_and_pod_statuses_are_batched(
    etcd, tmp_path: Path
) -> None:
    store = Store([etcd.url])
    count = tmp_path / "count"
    count.write_text("10\n")
    runner = Runner(cfg(etcd.url, 10), store=store, nodes_file=count)

    async def body() -> None:
        names = sorted(records(store, nodes_prefix("t1")))
        pods = 60
        for i in range(pods):
            pod = {
                "metadata": {"name": f"p{i}", "namespace": "default", "uid": f"u{i}"},
                "spec": {"nodeName": names[i % 10]},
            }
            await asyncio.to_thread(store.put, pod_key("t1", "default", f"p{i}"), json.dumps(pod))

        def running() -> bool:
            sts = [store.get(podstatus_key("t1", "default", f"p{i}")) for i in range(pods)]
            return all(s is not None and s.json()["phase"] == "Running" for s in sts)

        await until("every hollow pod Running", running)
        assert runner.writer.batches < 2 * pods, "Pending and Running writes batched"
        count.write_text("4\n")
        await until("6 nodes dropped", lambda: len(records(store, nodes_prefix("t1"))) == 4)
        await asyncio.sleep(2.0)  # two heartbeat periods: no tick writes a dropped node back
        assert sorted(records(store, nodes_prefix("t1"))) == names[:4]
        assert len(records(store, subnets_prefix("t1"))) == 4

    with_runner(runner, body)


def test_lag_histogram_and_the_grid() -> None:
    h = LagHistogram()
    for lag in (0.001, 0.3, 20.0):
        h.observe(lag, 15.0)
    h.observe(16.0, 15.0)
    rec = json.loads(h.record(nodes=3))
    assert rec["count"] == 4 and rec["late"] == 2 and rec["max_s"] == 20.0
    assert rec["counts"][LE.index(0.005)] == 1 and rec["counts"][LE.index(0.5)] == 2
    assert rec["counts"][-1] == 4 and rec["nodes"] == 3
    assert h.window()[0] == 4 and h.window()[3] == 20.0
    assert next_due(100.0, 100.4, 15.0) == 115.0, "a beat on time keeps its grid"
    assert next_due(100.0, 114.0, 15.0) == 115.0, "a late beat too"
    assert next_due(100.0, 130.0, 15.0) == 145.0, "a period behind: a new grid, no burst"
    assert tick_s(15.0) == 1.0 and math.isclose(tick_s(1.0), 0.25)


def test_a_beat_is_late_only_past_the_first_tick_after_it_was_due() -> None:
    assert on_time(3.4, at=4.0, tick=1.0) == 4.0, "waits for the next tick: not late"
    assert on_time(3.0, at=4.0, tick=1.0) == 3.0, "the tick at 3.0 should have written it"
    assert on_time(1.5, at=4.0, tick=1.0) == 2.0, "missed by the ticks at 2 and 3"
    assert on_time(4.2, at=4.0, tick=1.0) == 4.2, "due while this tick ran"
