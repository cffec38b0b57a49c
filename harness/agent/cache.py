"""The agent's in-memory mirrors of watched etcd prefixes (peers, pods, the mesh's)."""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Any

from harness.agent.datapath.base import Peer
from harness.store import KV, Event
from harness.store.keys import mesh_prefix

log = logging.getLogger("podlab.agent")


class Cache:
    """A watched prefix mirrored in memory; sets ``dirty`` on every change."""

    def __init__(self, dirty: threading.Event) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.dirty = dirty
        self.changed = False  # set on every change, cleared by the reconciler
        # False until the first full listing: reconciling against an empty cache
        # would delete every route and pod after a restart.
        self.synced = False

    def take_changed(self, resync: bool) -> bool:
        """Whether to reconcile this domain now: it changed (or a resync is due) and
        its first listing has arrived."""
        with self.lock:
            if not self.synced:
                return False
            changed, self.changed = self.changed, False
        return changed or resync

    def reset(self, kvs: list[KV]) -> None:
        with self.lock:
            self.items = {kv.key: obj for kv in kvs if (obj := as_object(kv)) is not None}
            self._relisted()
            self.changed = self.synced = True
        self.dirty.set()

    def events(self, events: list[Event]) -> None:
        with self.lock:
            for ev in events:
                obj = as_object(ev.kv) if ev.type != "DELETE" else None
                if obj is None:
                    self.items.pop(ev.kv.key, None)
                else:
                    self.items[ev.kv.key] = obj
                self._derive(ev.kv.key, obj)
            self.changed = True
        self.dirty.set()

    def _relisted(self) -> None:
        """Under the lock, after a full listing: rebuild what is derived from the items."""
        for key, obj in self.items.items():
            self._derive(key, obj)

    def _derive(self, key: str, obj: dict[str, Any] | None) -> None:
        """Under the lock, for a key set (``obj``) or deleted (None); nothing by default."""

    def poke(self) -> None:
        """Reconcile this domain although nothing in etcd changed (a pod process exited)."""
        with self.lock:
            self.changed = True
        self.dirty.set()

    def values(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.items.values())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return dict(self.items)


class PeerCache(Cache):
    """Subnet leases, each parsed into a ``Peer`` once, when it arrives: a pass hands the
    same Peer objects while their leases are unchanged (the reconciler reuses what it
    derived for each; re-parsing 1,000 leases' addresses was most of a one-peer pass),
    and a malformed lease is reported once, not on every pass."""

    def __init__(self, dirty: threading.Event, skip_node: str = "") -> None:
        super().__init__(dirty)
        self.skip_node = skip_node  # this node's own lease is not a peer
        self._peers: dict[str, Peer] = {}

    def _relisted(self) -> None:
        self._peers = {}
        super()._relisted()

    def _lease(self, key: str) -> tuple[str, bool]:
        """(the lease's cluster, whether ``key`` is a lease): every key here is one."""
        return "", True

    def _derive(self, key: str, obj: dict[str, Any] | None) -> None:
        cluster, lease = self._lease(key)
        self._peers.pop(key, None)
        if obj is None or not lease or (self.skip_node and obj.get("node") == self.skip_node):
            return
        try:
            self._peers[key] = Peer.from_record(obj, cluster=cluster)
        except (KeyError, ValueError) as exc:
            log.warning("ignoring malformed subnet lease %s: %s", key, exc)

    def peers(self) -> list[Peer]:
        """The leases as datapath peers (``Peer.cluster`` names a mirrored one's cluster)."""
        with self.lock:
            return list(self._peers.values())


class MeshCache(PeerCache):
    """The mirrored subnet leases and clusterinfo of the mesh's other clusters.

    Only those keys are kept (the mirror also holds pods, statuses, services: a
    remote pod's status change must not wake the datapath)."""

    def __init__(self, dirty: threading.Event, cluster: str) -> None:
        super().__init__(dirty)
        self.prefix = mesh_prefix(cluster)

    def wanted(self, key: str) -> bool:
        _remote, _, rel = key[len(self.prefix) :].partition("/")
        return rel == "clusterinfo" or rel.startswith("subnets/")

    def reset(self, kvs: list[KV]) -> None:
        super().reset([kv for kv in kvs if self.wanted(kv.key)])

    def events(self, events: list[Event]) -> None:
        mine = [e for e in events if self.wanted(e.kv.key)]
        if mine:
            super().events(mine)

    def _lease(self, key: str) -> tuple[str, bool]:
        remote, _, rel = key[len(self.prefix) :].partition("/")
        return remote, rel.startswith("subnets/")

    def pod_cidrs(self) -> list[ipaddress.IPv4Network]:
        """The other clusters' pod CIDRs (their clusterinfo): never masqueraded to."""
        out = []
        for key, rec in self.snapshot().items():
            if key.endswith("/clusterinfo"):
                try:
                    out.append(ipaddress.IPv4Network(str(rec["podCIDR"])))
                except (KeyError, ValueError):
                    log.warning("ignoring mirrored clusterinfo without podCIDR: %s", key)
        return sorted(out)


def as_object(kv: KV) -> dict[str, Any] | None:
    try:
        value = kv.json()
    except ValueError:
        log.warning("ignoring non-JSON value at %s", kv.key)
        return None
    return value if isinstance(value, dict) else None
