"""The hollow nodes' pods: kwok's stages, driven by one watch on ``pods/``.

The runner (runner.py) keeps nodes alive: subnets, the one lease, heartbeats. This
side keeps their pods moving, and shares only the node table with it (which node
holds which subnet and pod IPs). A pod whose ``spec.nodeName`` is one of ours goes
through kwok's stages: ``pending_s`` after it is seen its status says Pending with an
IP from the node's subnet, ``running_s`` later Running and Ready; a
``deletionTimestamp`` → after ``delete_s`` its status and object are removed (the
kubelet's part). Status writes are batched (writer.py). A previous run's statuses
are read once at the start: a restarted runner keeps its pods' IPs and takes back
their nodes' subnets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from typing import Any

from harness.hollow.model import HollowConfig, HollowNode, now_rfc3339, pod_status
from harness.hollow.writer import Writer
from harness.store import KV, Event, Store, StoreError
from harness.store.keys import kind_prefix, pod_key, podstatus_key, podstatus_prefix

log = logging.getLogger("podlab.hollow")
PodKey = tuple[str, str]
RELEASE_S = 30.0  # a stop waits this long for the statuses' deletes (etcd may be away)


class PodStages:
    """The pods of ``nodes`` (the runner's table, shared): ``on_pods`` is the watch
    callback; ``ready`` is set by the runner once every node holds its subnet."""

    def __init__(
        self,
        cfg: HollowConfig,
        store: Store,
        nodes: dict[str, HollowNode],
        ready: asyncio.Event,
    ) -> None:
        self.cfg, self.store, self.nodes, self.ready = cfg, store, nodes, ready
        self.pods: dict[PodKey, dict[str, Any]] = {}  # our nodes' pods as last seen
        self.tasks: dict[PodKey, asyncio.Task[None]] = {}
        self.prev_status: dict[PodKey, dict[str, Any]] = {}  # statuses of a previous run
        self.writer = Writer(store)

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def previous_subnets(self) -> dict[str, ipaddress.IPv4Network]:
        """Each node's subnet in a previous run, read off its pods' statuses (the agent
        keeps it in a state file): a restart after the leases expired takes the same
        subnet back while it is free, so running pods keep their IPs."""
        cl, out = self.cfg.cluster, {}
        pods = {_pkey(kv.key): kv_obj(kv) for kv in self.store.get_prefix(pod_prefix(cl))[0]}
        for kv in self.store.get_prefix(podstatus_prefix(cl))[0]:
            st, pod = kv_obj(kv), pods.get(_pkey(kv.key), {})
            node = pod.get("spec", {}).get("nodeName")
            if st.get("hollow") and node in self.nodes and st.get("uid") == _uid(pod):
                self.prev_status[_pkey(kv.key)] = st  # read once here, not per pod later
                net = f"{st.get('podIP')}/{self.cfg.node_prefix}"
                with contextlib.suppress(ValueError):
                    out[node] = ipaddress.IPv4Network(net, strict=False)
        return out

    def on_pods(self, kvs: list[KV] | None, events: list[Event] | None) -> None:
        """Watch callback (runs in the event loop): start or cancel pods' stages."""
        seen: dict[PodKey, dict[str, Any] | None] = {}
        if kvs is not None:  # a full listing: everything not in it is gone
            seen = dict.fromkeys(self.pods)
            for kv in kvs:
                seen[_pkey(kv.key)] = kv_obj(kv)
        for ev in events or []:
            seen[_pkey(ev.kv.key)] = None if ev.type == "DELETE" else kv_obj(ev.kv)
        for key, obj in seen.items():
            node = (obj or {}).get("spec", {}).get("nodeName")
            if obj is None or node not in self.nodes:
                if self.pods.pop(key, None) is not None:
                    self._restart(key, self.gone(key))
                continue
            old = self.pods.get(key)
            self.pods[key] = obj
            if old is None or _uid(old) != _uid(obj):
                self._restart(key, self.stages(key, obj))
            elif _deleting(obj) and not _deleting(old):
                self._restart(key, self.delete(key, obj))

    def _restart(self, key: PodKey, coro: Any) -> None:
        if (task := self.tasks.pop(key, None)) is not None:
            task.cancel()
        self.tasks[key] = asyncio.get_running_loop().create_task(coro)

    async def stages(self, key: PodKey, pod: dict[str, Any]) -> None:
        """kwok's pod-ready stages: Pending (with its IP), then Running + Ready."""
        if _deleting(pod):
            return await self.delete(key, pod)
        node = self.nodes[pod["spec"]["nodeName"]]
        await self.ready.wait()
        sk = podstatus_key(self.cfg.cluster, *key)
        prev = self.prev_status.pop(key, {})  # a previous run's status (read at the start)
        ip_ok = _within(prev.get("podIP"), node.subnet)
        if prev.get("uid") == _uid(pod) and prev.get("phase") == "Running" and ip_ok:
            node.pod_ips[key] = str(prev.get("podIP", ""))  # a restarted runner keeps IPs
            return
        await asyncio.sleep(self.cfg.pending_s)
        ip = node.pod_ips.get(key) or node.next_ip()
        node.pod_ips[key] = ip
        t0 = now_rfc3339()
        pending = pod_status(_uid(pod), "Pending", ip, self.cfg.underlay_ip, t0)
        await self.writer.put(sk, json.dumps(pending))
        await asyncio.sleep(self.cfg.running_s)
        running = pod_status(_uid(pod), "Running", ip, self.cfg.underlay_ip, t0, now_rfc3339())
        await self.writer.put(sk, json.dumps(running))

    async def delete(self, key: PodKey, pod: dict[str, Any]) -> None:
        """A graceful delete: after ``delete_s`` remove the status, then the object."""
        await asyncio.sleep(self.cfg.delete_s)
        await self.gone(key)
        pk = pod_key(self.cfg.cluster, *key)
        kv = await self.call(self.store.get, pk)
        if kv is not None and _uid(kv_obj(kv)) == _uid(pod):
            await self.call(self.store.delete_if, pk, kv.mod_revision)

    async def gone(self, key: PodKey) -> None:
        for node in self.nodes.values():
            node.pod_ips.pop(key, None)
        await self.writer.delete(podstatus_key(self.cfg.cluster, *key))

    async def forget(self, node: HollowNode) -> None:
        """A node dropped by a resize: its pods' stages stopped, their statuses deleted."""
        for key in list(node.pod_ips):
            self.pods.pop(key, None)
            if (t := self.tasks.pop(key, None)) is not None:
                t.cancel()
            with contextlib.suppress(StoreError):
                await self.gone(key)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Stop every stage (the runner's end); the tasks cancelled."""
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        return tasks

    async def release(self) -> None:
        """Every pod's status deleted (batched), bounded: a stop always ends."""
        try:
            await asyncio.wait_for(
                asyncio.gather(*(self.gone(k) for k in list(self.pods))), RELEASE_S
            )
        except TimeoutError:
            log.warning("pod statuses not all deleted within 30 s (etcd unreachable?)")


def pod_prefix(cluster: str) -> str:
    return kind_prefix(cluster, "pods")


def kv_obj(kv: KV | None) -> dict[str, Any]:
    try:
        got = kv.json() if kv is not None else {}
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def _within(ip: Any, subnet: ipaddress.IPv4Network | None) -> bool:
    try:
        return subnet is not None and ipaddress.IPv4Address(str(ip)) in subnet
    except ValueError:
        return False


def _pkey(key: str) -> PodKey:
    ns, name = key.rsplit("/", 2)[-2:]
    return ns, name


def _uid(pod: dict[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("uid", ""))


def _deleting(pod: dict[str, Any]) -> bool:
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))
