"""Export: the cluster's own etcd → its export etcd, plus a heartbeat every second.

The exporter watches ``/podlab/v1/<cluster>/`` in the cluster's etcd and keeps
the export etcd holding exactly the exported keys (``keys.EXPORTED``) with the
same names and bytes. A full reconcile (list both, put what differs, delete what
is gone) runs at start, after any failure, on a compacted watch and every
``resync_s``. The heartbeat (``/podlab/v1/<cluster>/heartbeat`` in the export
etcd only) is written only while the cluster's etcd answers and only after a
full reconcile succeeded, so a peer that sees a heartbeat knows the export is
complete — an export etcd that came back empty never looks like a cluster that
deleted everything.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from harness.mesh import keys
from harness.mesh.exportdb import ExportStore
from harness.store import KV, Event, Store, StoreError
from harness.store.keys import cluster_prefix

log = logging.getLogger("podlab.mesh.export")


def now_rfc3339() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Exporter:
    """Keeps the export etcd equal to the exported part of the cluster's etcd."""

    def __init__(
        self,
        cluster: str,
        local: Store,
        export: ExportStore,
        clusterinfo: dict[str, Any],
        peers: list[str],
        heartbeat_s: float = 1.0,
        resync_s: float = 30.0,
        trace: bool = False,
    ) -> None:
        self.cluster = cluster
        self.local = local
        self.export = export
        self.clusterinfo = clusterinfo
        self.peers = list(peers)
        self.heartbeat_s = heartbeat_s
        self.resync_s = resync_s
        self.prefix = cluster_prefix(cluster)
        self.ready = False  # a full reconcile succeeded since the last failure
        self.lock = threading.Lock()
        self.exported = 0  # keys in the export after the last full reconcile
        self.last_error: str | None = None
        self.trace = trace  # log every copied batch's timing (MeshConfig.trace)

    def _rel(self, key: str) -> str | None:
        rel = key[len(self.prefix) :] if key.startswith(self.prefix) else None
        return rel if rel is not None and keys.is_exported(rel) else None

    def publish_clusterinfo(self) -> None:
        """Write this cluster's ``clusterinfo`` into its own etcd (exported from there)."""
        value = json.dumps(self.clusterinfo, sort_keys=True)
        kv = self.local.get(keys.clusterinfo_key(self.cluster))
        if kv is None or kv.value.decode() != value:
            self.local.put(keys.clusterinfo_key(self.cluster), value)

    def set_peers(self, peers: list[str]) -> None:
        with self.lock:
            self.peers = list(peers)
            if self.ready:
                self.export.sync_peers(self.peers)

    def full(self) -> None:
        """Set up auth and peers, then make the export equal to the local state."""
        with self.lock:
            self.export.ensure_auth(self.cluster)
            self.export.sync_peers(self.peers)
            self.publish_clusterinfo()
            src, _ = self.local.get_prefix(self.prefix)
            want = {kv.key: kv.value for kv in src if self._rel(kv.key)}
            have_kvs, _ = self.export.get_prefix(self.prefix)
            have = {kv.key: kv.value for kv in have_kvs}
            puts: list[tuple[str, str | bytes]] = [
                (k, v) for k, v in want.items() if have.get(k) != v
            ]
            if puts:
                self.export.put_many(puts)
            hb = keys.heartbeat_key(self.cluster)
            gone = [k for k in have if k not in want and k != hb]
            for k in gone:
                self.export.delete(k)
            self.exported = len(want)
            self.ready = True
            self.last_error = None
        if puts or gone:
            log.info("export: %d keys, %d written, %d removed", len(want), len(puts), len(gone))

    # -- the local watch ------------------------------------------------------------------
    def on_reset(self, _kvs: list[KV]) -> None:
        """A (re-)listing of the local prefix: reconcile everything (raises to retry)."""
        try:
            self.full()
        except StoreError as exc:
            self._failed(exc)
            raise

    def on_events(self, events: list[Event]) -> None:
        """Copy exported changes in order; a failure makes the watch replay them."""
        arrived = time.time()
        try:
            with self.lock:
                copied = self._apply(events)
        except StoreError as exc:
            self._failed(exc)
            raise
        if self.trace and copied:
            written = time.time()
            log.info("export trace: arrived %.4f written %.4f keys %d", arrived, written, copied)

    def _apply(self, events: list[Event]) -> int:
        """Write the exported keys among ``events``; how many there were."""
        # one key at most once per transaction (etcd refuses duplicates in a txn)
        puts: dict[str, str | bytes] = {}
        copied = 0
        for e in events:
            if self._rel(e.kv.key) is None:
                continue
            copied += 1
            if e.type == "DELETE":
                if puts:
                    self.export.put_many(list(puts.items()))
                    puts.clear()
                self.export.delete(e.kv.key)
            else:
                puts[e.kv.key] = e.kv.value
        if puts:
            self.export.put_many(list(puts.items()))
        return copied

    def _failed(self, exc: Exception) -> None:
        if self.ready or self.last_error != str(exc):
            log.warning("export etcd: %s (heartbeat paused until a full reconcile)", exc)
        self.ready = False
        self.last_error = str(exc)

    # -- heartbeat ------------------------------------------------------------------------
    def run_heartbeat(self, stop: threading.Event) -> None:
        """Every ``heartbeat_s``: prove the local etcd answers, then beat in the export."""
        next_full = time.monotonic() + self.resync_s
        while not stop.wait(self.heartbeat_s):
            try:
                if not self.ready or time.monotonic() >= next_full:
                    self.full()
                    next_full = time.monotonic() + self.resync_s
                self.local.get(keys.clusterinfo_key(self.cluster))  # the cluster etcd is up
                self.export.put(keys.heartbeat_key(self.cluster), now_rfc3339())
            except StoreError as exc:
                self._failed(exc)
