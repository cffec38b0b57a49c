"""The hollow-node runner: N hollow nodes in one asyncio process (one etcd client).

Per node, one task leases a subnet exactly as the agent does (``create`` of
``subnets/<a.b.c.d-len>`` only if absent, a subnet already naming the node
reclaimed) under the runner's one etcd lease (the agents' TTL). One ticker then
refreshes that lease and rewrites the records of the nodes whose heartbeat is
due, every ``heartbeat_s`` per node, in one transaction per tick (beat.py: the
cost, the tick lag it measures and publishes). Pods: one watch on ``pods/``
(a thread, as the store client is blocking) feeds the loop, and pods.py moves
the pods scheduled to our nodes through kwok's stages (the two halves share the
node table: which node holds which subnet and pod IPs).

Stopping: SIGTERM/SIGINT revokes every lease (node records and subnets go at
once, statuses are deleted): ``podlab hollow --nodes 0``. SIGKILL leaves the
leases to expire: the real agents judge the nodes dead after their grace,
exactly as for a crashed real node. A restarted runner reclaims its subnets and
keeps its pods' IPs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import math
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

from harness.hollow.beat import PUBLISH_S, LagHistogram, next_due, runner_key, tick_s
from harness.hollow.model import HollowConfig, HollowError, HollowNode, node_record
from harness.hollow.model import subnet_record as make_subnet_record
from harness.hollow.pods import PodStages, kv_obj, pod_prefix
from harness.hollow.writer import Writer
from harness.store import KV, MAX_TXN_OPS, Event, Store, StoreError, Write
from harness.store.keys import node_key, subnet_key, subnets_prefix

log = logging.getLogger("podlab.hollow")


class Runner:
    """``await Runner(cfg).run(stop)`` until ``stop`` is set."""

    def __init__(
        self, cfg: HollowConfig, store: Store | None = None, nodes_file: Path | None = None
    ) -> None:
        cfg.check()
        self.cfg = cfg
        self.nodes_file = nodes_file  # the wanted count; re-read every second (resize)
        self.lives: dict[str, asyncio.Task[None]] = {}
        self.store = store or Store(cfg.etcd_endpoints)
        self.nodes = {n: HollowNode(n) for n in cfg.names()}
        self.ready = asyncio.Event()  # every node leased and registered
        self.stages = PodStages(cfg, self.store, self.nodes, self.ready)
        self.before: dict[str, ipaddress.IPv4Network] = {}  # subnets of a previous run
        self.list_lock = asyncio.Lock()
        self.listing: list[KV] | None = None  # subnets/ as last listed (see subnets())
        self.list_gen = 0
        self.picked: set[str] = set()  # subnet keys our nodes claimed or tried
        self.lease_id = 0  # the runner's one etcd lease: every record and subnet of ours
        self.grant_lock = asyncio.Lock()
        self.write_lock = asyncio.Lock()  # a tick's writes vs a drop's deletes
        self.first: dict[str, asyncio.Future[None]] = {}  # nodes not yet registered
        self.lag = LagHistogram()
        self.ticks = 0
        self.lease_lost = 0
        self.warned = 0.0

    @property
    def writer(self) -> Writer:
        """The pod statuses' batched writer (what tests count)."""
        return self.stages.writer

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    # -- nodes ----------------------------------------------------------------------
    async def subnets(self, seen: int) -> tuple[int, list[KV]]:
        """The subnet leases, listed once for all the nodes leasing together: a caller
        that saw listing ``seen`` fail gets a fresh one, unless another already made it
        (listing per node made starting N nodes quadratic)."""
        async with self.list_lock:
            if self.listing is None or self.list_gen == seen:
                kvs, _ = await self.call(self.store.get_prefix, subnets_prefix(self.cfg.cluster))
                self.listing, self.list_gen = kvs, self.list_gen + 1
            return self.list_gen, self.listing

    async def lease(self, node: HollowNode) -> None:
        """Claim a subnet the agent's way: reclaim one naming us, else create a free one."""
        cfg, st = self.cfg, self.store
        lease_id = await self.runner_lease()
        cands = list(ipaddress.IPv4Network(cfg.pod_cidr).subnets(new_prefix=cfg.node_prefix))[1:]
        seen = -1
        for _ in range(50):
            seen, kvs = await self.subnets(seen)
            recs = {kv.key: kv_obj(kv) for kv in kvs}
            mine = [kv for kv in kvs if recs[kv.key].get("node") == node.name]
            if mine:
                node.subnet = ipaddress.IPv4Network(recs[mine[0].key]["subnet"])
                rec = json.dumps(make_subnet_record(cfg, node.name, node.subnet))
                if await self.call(st.replace_if, mine[0].key, rec, mine[0].mod_revision, lease_id):
                    return
                continue
            # the node's own earlier subnet (an expired lease) stays a candidate
            prev = node.subnet or self.before.get(node.name)
            own = {subnet_key(cfg.cluster, str(prev))} if prev else set()
            taken = recs.keys() | (self.picked - own)
            free = [s for s in cands if subnet_key(cfg.cluster, str(s)) not in taken]
            if not free:
                raise StoreError(f"pod CIDR {cfg.pod_cidr} has no free /{cfg.node_prefix} left")
            # the previous subnet if free, else a random free one (spreads contention)
            want = prev if prev in free else random.choice(free)
            key = subnet_key(cfg.cluster, str(want))
            self.picked.add(key)  # before the await: our other nodes skip it
            rec = json.dumps(make_subnet_record(cfg, node.name, want))
            if await self.call(st.create, key, rec, lease_id):
                node.subnet = want
                return
        raise StoreError(f"{node.name}: gave up leasing a subnet after 50 contended attempts")

    async def runner_lease(self) -> int:
        """The runner's etcd lease (granted once; again after it expired)."""
        async with self.grant_lock:
            if not self.lease_id:
                self.lease_id = await self.call(self.store.grant, self.cfg.lease_ttl_s)
            return self.lease_id

    async def keep(self, node: HollowNode) -> None:
        """Lease the node's subnet and wait for the ticker to register it."""
        await self.lease(node)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.first[node.name] = fut
        node.due = asyncio.get_running_loop().time()  # registered at the next tick
        await fut

    async def ticker(self) -> None:
        """Every tick: refresh the lease, write the due heartbeats; never stops on errors."""
        loop = asyncio.get_running_loop()
        period, tick = self.cfg.heartbeat_s, tick_s(self.cfg.heartbeat_s)
        at, published, logged = loop.time(), 0.0, loop.time()
        while True:
            try:
                async with self.write_lock:
                    await self.tick(period, at, tick)
                if loop.time() - published >= min(PUBLISH_S, period):
                    published = loop.time()
                    await self.publish(tick)
            except StoreError as exc:
                log.warning("heartbeat tick failed (retried next tick): %s", exc)
            if loop.time() - logged >= 60.0:
                logged = loop.time()
                n, p50, p99, top = self.lag.window()
                log.info(
                    "heartbeats: %d nodes, %d beats, tick lag p50 %.3f s p99 %.3f s max %.3f s"
                    ", %d beats late of %d, %d ticks",
                    len(self.nodes), n, p50, p99, top, self.lag.late, self.lag.count, self.ticks,
                )  # fmt: skip
            at += tick
            if at < loop.time():  # behind: tick again at once (the lag is in each beat)
                at = loop.time()
            await asyncio.sleep(at - loop.time())

    async def tick(self, period: float, at: float, tick: float) -> None:
        """Refresh the runner's lease, then write every due node record in transactions of
        up to MAX_TXN_OPS puts. Each beat's lag is observed: its write landed − the first
        tick at or after it was due (``at`` is this tick's scheduled time), so the lag is
        how far the runner is behind, not the up to one tick a beat waits on time."""
        loop = asyncio.get_running_loop()
        self.ticks += 1
        if self.lease_id and await self.call(self.store.refresh, self.lease_id) <= 0:
            await self.relapse()
        now = loop.time()
        due = sorted(
            (n for n in self.nodes.values() if n.due is not None and n.due <= now),
            key=lambda n: n.due or 0.0,
        )
        oldest = due[0].due or now if due else now
        for i in range(0, len(due), MAX_TXN_OPS):
            chunk = due[i : i + MAX_TXN_OPS]
            writes = [
                Write(
                    node_key(self.cfg.cluster, n.name),
                    json.dumps(node_record(self.cfg, n)).encode(),
                    None,
                    self.lease_id,
                )
                for n in chunk
            ]
            await self.call(self.store.commit, writes)
            done = loop.time()
            for n in chunk:
                assert n.due is not None
                self.lag.observe(done - on_time(n.due, at, tick), period)
                if (fut := self.first.pop(n.name, None)) is not None:
                    if not fut.done():
                        fut.set_result(None)
                    n.due = done + random.uniform(0, period)  # spread over the period
                else:
                    n.due = next_due(n.due, done, period)
        worst = loop.time() - oldest
        if worst > period and loop.time() - self.warned >= 10.0:  # never silently behind
            self.warned = loop.time()
            log.warning(
                "heartbeats behind: %d due, the oldest written %.1f s late (period %g s)",
                len(due), worst, period,
            )  # fmt: skip

    async def relapse(self) -> None:
        """The runner's lease expired (records and subnets gone): a new lease, every
        node's subnet claimed again (the agent's re-lease), then registered at once."""
        self.lease_lost += 1
        log.warning("etcd lease expired; re-claiming %d subnets", len(self.nodes))
        async with self.grant_lock:
            self.lease_id = 0
        for n in self.nodes.values():
            n.due = None
        self.listing = None
        await asyncio.gather(*(self.lease(n) for n in list(self.nodes.values())))
        now = asyncio.get_running_loop().time()
        for n in self.nodes.values():
            n.due = now

    async def publish(self, tick: float) -> None:
        """The tick-lag histogram and counts as ``hollowrunners/<prefix>`` (beat.py)."""
        if not self.lease_id:
            return
        body = self.lag.record(
            nodes=len(self.nodes), heartbeat_s=self.cfg.heartbeat_s, tick_s=tick,
            ticks=self.ticks, lease_lost=self.lease_lost, time=time.time(),
        )  # fmt: skip
        await self.call(
            self.store.put, runner_key(self.cfg.cluster, self.cfg.prefix), body, self.lease_id
        )

    # -- the process ----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        wstop = threading.Event()
        prefix = pod_prefix(self.cfg.cluster)

        def events(evs: list[Event]) -> None:
            loop.call_soon_threadsafe(self.stages.on_pods, None, evs)

        def reset(kvs: list[KV]) -> None:
            loop.call_soon_threadsafe(self.stages.on_pods, kvs, None)

        watcher = threading.Thread(
            target=self.store.watch_prefix, args=(prefix, events, reset, wstop), daemon=True
        )
        self.before = await self.call(self.stages.previous_subnets)
        self.writer.start()
        ticker = loop.create_task(self.ticker())
        try:
            await self.start(list(self.nodes.values()))
            self.ready.set()
            watcher.start()
            log.info("%d hollow nodes up (heartbeat %g s)", len(self.nodes), self.cfg.heartbeat_s)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                want = self.wanted()
                if want is not None and want != len(self.nodes) and not stop.is_set():
                    await self.resize(want)
        finally:
            wstop.set()
            for t in [ticker, *self.lives.values(), *self.stages.cancel()]:
                t.cancel()
            await self.release()
            self.writer.stop()

    async def start(self, nodes: list[HollowNode]) -> None:
        """Lease and register ``nodes``; return once all registered, failing fast on an
        error (e.g. the pod CIDR exhausted): the first one raised."""
        lives = [asyncio.create_task(self.keep(n)) for n in nodes]
        self.lives.update(zip((n.name for n in nodes), lives, strict=True))
        await asyncio.gather(*lives)

    def wanted(self) -> int | None:
        """The count in ``nodes_file`` (None: no file, or not a count: keep the size)."""
        if self.nodes_file is None:
            return None
        try:
            return int(self.nodes_file.read_text().strip())
        except (OSError, ValueError):
            return None

    async def resize(self, want: int) -> None:
        """Grow (new nodes ``<prefix>-<k>`` …) or shrink (the highest first, leases
        revoked, their pods' statuses deleted); the nodes kept are not touched."""
        try:
            dataclasses.replace(self.cfg, nodes=want).check()
        except HollowError as exc:
            log.error("resize refused: %s", exc)
            return
        have = len(self.nodes)
        if want > have:
            new = [HollowNode(n) for n in self.cfg.names(want)[have:]]
            self.nodes.update((n.name, n) for n in new)
            await self.start(new)
            kvs, _ = await self.call(self.store.get_prefix, pod_prefix(self.cfg.cluster))
            self.stages.on_pods(kvs, None)  # pods already scheduled to the new names
        for name in self.cfg.names(have)[want:]:
            await self.drop(self.nodes.pop(name))
        log.info("resized from %d to %d hollow nodes", have, want)

    async def drop(self, node: HollowNode) -> None:
        """One node gone at once: its record and subnet deleted (they share the runner's
        lease, so nothing is revoked), with no tick in between to write it again."""
        if (task := self.lives.pop(node.name, None)) is not None:
            task.cancel()
        self.first.pop(node.name, None)
        async with self.write_lock:
            node.due = None
            keys = [node_key(self.cfg.cluster, node.name)]
            if node.subnet is not None:
                keys.append(subnet_key(self.cfg.cluster, str(node.subnet)))
            with contextlib.suppress(StoreError):
                await self.call(self.store.commit, [Write(k, None) for k in keys])
        await self.stages.forget(node)

    async def release(self) -> None:
        """Revoke the runner's lease (records and subnets vanish) and drop our pods'
        statuses (batched)."""
        if self.lease_id:
            with contextlib.suppress(StoreError):
                await self.call(self.store.revoke, self.lease_id)
        await self.stages.release()  # the writer retries while etcd is away: bounded
        log.info("released %d hollow nodes", len(self.nodes))


def on_time(due: float, at: float, tick: float) -> float:
    """The first tick time at or after ``due``, of ticks scheduled every ``tick`` up to ``at``
    (a beat due before ``at`` was missed by the ticks in between only if the runner lagged)."""
    if due >= at:  # due after the tick was scheduled, before it ran: written at once
        return due
    return at - math.floor((at - due) / tick) * tick


def serve(cfg: HollowConfig, nodes_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT, then release every node (the supervised process)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Runner(cfg, nodes_file=nodes_file).run(stop)

    asyncio.run(main())
