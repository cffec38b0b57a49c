"""The controller manager's view of its cluster: one watch, kept in memory, written through.

One watch on ``/podlab/v1/<cluster>/`` keeps the records the controllers read
(pods and their status, workloads and theirs, quotas, limit ranges, nodes,
node metrics, the autoscaler's memory); everything else under the prefix
(subnets, the mesh's mirror…) is dropped on arrival. Each record keeps its
``mod_revision``, so every write a controller makes is guarded by the revision
it decided on: a concurrent writer (``podlab apply``, ``scale``, another sync)
makes the write fail instead of being overwritten, and the next pass decides
again.

Write-through: a successful write is applied to the view at once with the
revision the transaction returned, so the next pass never acts on a view that
lags its own writes (the ReplicaSet controller would otherwise create a pod
twice; Kubernetes' controllers keep "expectations" for the same reason). The
watch event that follows carries the same revision and changes nothing.

Nothing here survives a restart, by design: a new process lists everything
from etcd again (restart-safe: decisions are recomputed from etcd, never from
memory).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from harness.store import KV, Event, Store, Write, keys

Obj = dict[str, Any]
WATCHED = (
    "pods",
    "podstatus",
    "deployments",
    "deploymentstatus",
    "replicasets",
    "replicasetstatus",
    "horizontalpodautoscalers",
    "hpastatus",
    "resourcequotas",
    "resourcequotastatus",
    "limitranges",
    "services",
    "nodes",
    "nodemetrics",
    "controllers",
)


@dataclass(frozen=True)
class Record:
    key: str
    obj: Obj
    rev: int


class View:
    """Records by folder (``pods``, ``replicasets``…) and key; thread-safe."""

    def __init__(self, store: Store, cluster: str) -> None:
        self.store, self.cluster = store, cluster
        self.prefix = keys.cluster_prefix(cluster)
        self._data: dict[str, dict[str, Record]] = {p: {} for p in WATCHED}
        self._lock = threading.Lock()
        self.changed = threading.Event()
        self.synced = threading.Event()
        self.revision = 0

    # -- the watch --------------------------------------------------------------------------
    def folder(self, key: str) -> str | None:
        if not key.startswith(self.prefix):
            return None
        head = key[len(self.prefix) :].split("/", 1)[0]
        return head if head in self._data else None

    def reset(self, kvs: list[KV]) -> None:
        with self._lock:
            for records in self._data.values():
                records.clear()
            for kv in kvs:
                self._set(kv)
        self.synced.set()
        self.changed.set()

    def events(self, events: list[Event]) -> None:
        touched = False
        with self._lock:
            for ev in events:
                if self.folder(ev.kv.key) is None:
                    continue
                touched = True
                if ev.type == "DELETE":
                    self._drop(ev.kv.key, ev.kv.mod_revision)
                else:
                    self._set(ev.kv)
        if touched:
            self.changed.set()

    def _set(self, kv: KV) -> None:
        folder = self.folder(kv.key)
        if folder is None:
            return
        current = self._data[folder].get(kv.key)
        if current is not None and current.rev >= kv.mod_revision:
            return  # our own write-through got here first
        try:
            obj = json.loads(kv.value)
        except ValueError:
            return
        if isinstance(obj, dict):
            self._data[folder][kv.key] = Record(kv.key, obj, kv.mod_revision)
            self.revision = max(self.revision, kv.mod_revision)

    def _drop(self, key: str, rev: int) -> None:
        folder = self.folder(key)
        if folder is not None:
            current = self._data[folder].get(key)
            if current is None or rev == 0 or current.rev <= rev:
                self._data[folder].pop(key, None)

    def watch(self, stop: threading.Event) -> None:
        self.store.watch_prefix(self.prefix, self.events, self.reset, stop)

    # -- reads ------------------------------------------------------------------------------
    def records(self, folder: str, namespace: str | None = None) -> list[Record]:
        start = f"{self.prefix}{folder}/" + (f"{namespace}/" if namespace else "")
        with self._lock:
            return sorted(
                (r for k, r in self._data[folder].items() if k.startswith(start)),
                key=lambda r: r.key,
            )

    def get(self, key: str) -> Record | None:
        folder = self.folder(key)
        if folder is None:
            return None
        with self._lock:
            return self._data[folder].get(key)

    def key(self, folder: str, namespace: str | None, name: str) -> str:
        return keys.object_key(self.cluster, folder, namespace, name)

    # -- guarded writes ---------------------------------------------------------------------
    def commit(self, writes: list[tuple[str, Obj | None, int | None]]) -> bool:
        """Write (key, object or None to delete, expected revision: 0 absent, None
        unchecked) all at once; on success the view has them already."""
        batch = [
            Write(k, None if o is None else json.dumps(o, sort_keys=True).encode(), rev)
            for k, o, rev in writes
        ]
        revision = self.store.commit_revision(batch)
        if revision is None:
            return False
        with self._lock:
            for k, o, _ in writes:
                folder = self.folder(k)
                if folder is None:
                    continue
                if o is None:
                    self._data[folder].pop(k, None)
                else:
                    self._data[folder][k] = Record(k, o, revision)
            self.revision = max(self.revision, revision)
        return True

    def put(self, key: str, obj: Obj, rev: int | None) -> bool:
        return self.commit([(key, obj, rev)])

    def delete(self, key: str, rev: int | None) -> bool:
        return self.commit([(key, None, rev)])
