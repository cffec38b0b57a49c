"""Import: one peer's export etcd → ``/podlab/v1/<local>/mesh/<peer>/`` in our etcd.

One ``RemoteLink`` per peer, with its own thread. Its life:

``connecting`` — list the peer (``etcdctl get``). A listing counts only if it
holds the peer's ``heartbeat`` (the peer's export is complete) and its
``clusterinfo`` passes the membership rules (``membership.refusal``); a refused
peer gets state ``refused``, its mirror is removed and nothing stays connected.
An accepted listing is reconciled into the mirror — put what differs, delete
what the peer no longer has, and only that — and a watch starts at the next
revision.

``connected`` — every watch response is copied in order (puts batched, deletes
as they come); a heartbeat (every second) proves the peer alive.

``disconnected`` — no heartbeat for ``dead_after_s``: the watch is stopped, the
mirror is left exactly as it is (a control-plane outage must not remove
backends or routes), and the link goes back to listing every second.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from harness.errors import ToolError
from harness.mesh import keys
from harness.mesh.etcdctl import Etcdctl, Listing, Watch, WatchEvent, classify, explain, tls_problem
from harness.mesh.exporter import now_rfc3339
from harness.mesh.membership import refusal
from harness.store import KV, Store, StoreError
from harness.store.keys import cluster_prefix

log = logging.getLogger("podlab.mesh.import")

STATUS_EVERY_S = 5.0


class RemoteLink:
    """Mirrors one peer; ``run(stop)`` until stopped, ``close()`` to end the watch."""

    def __init__(
        self,
        local_cluster: str,
        remote: str,
        ctl: Etcdctl,
        store: Store,
        own_info: Callable[[], dict[str, Any]],
        accepted: Callable[[str], Mapping[str, Mapping[str, Any]]],
        dead_after_s: float = 3.0,
        heartbeat_gap_s: float = 1.2,
        trace: bool = False,
    ) -> None:
        self.local = local_cluster
        self.remote = remote
        self.ctl = ctl
        self.store = store
        self.own_info = own_info
        self.accepted = accepted  # clusterinfo of the other accepted peers
        self.dead_after_s = dead_after_s
        self.heartbeat_gap_s = heartbeat_gap_s  # > the peer's heartbeat period
        self.src_prefix = cluster_prefix(remote)
        self.lock = threading.Lock()
        self.mirror: dict[str, bytes] = {}  # rel -> value, as written to our etcd
        self.info: dict[str, Any] | None = None  # the peer's clusterinfo once accepted
        self.state = "connecting"
        self.since = now_rfc3339()
        self.last_sync: str | None = None
        self.last_heartbeat: str | None = None
        self.beat = 0.0  # monotonic time of the last heartbeat event
        self.last_error: str | None = None
        self.watch: Watch | None = None
        self.broken = False  # a write to our etcd failed: re-list
        self._status_written = ""
        self._status_at = 0.0
        self.trace = trace  # log every copied batch's timing (MeshConfig.trace)

    # -- state ---------------------------------------------------------------------------
    def _set(self, state: str, error: str | None) -> None:
        if state != self.state:
            log.info("%s: %s%s", self.remote, state, f" ({error})" if error else "")
            self.state, self.since = state, now_rfc3339()
        self.last_error = error

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._step()
            except StoreError as exc:  # our own etcd: keep trying, never drop the mirror
                log.warning("%s: local etcd: %s", self.remote, exc)
                self.broken = True
            if not stop.is_set():
                self.write_status()
            stop.wait(0.5 if self.state == "connected" else 1.0)
        self.close()

    def _step(self) -> None:
        if self.state == "connected":
            dead = time.monotonic() - self.beat > self.dead_after_s
            ended = self.watch is not None and not self.watch.alive()
            if not (dead or ended or self.broken):
                return
            self.close()
            if dead or ended:
                why = f"no heartbeat from {self.remote} for {self.dead_after_s:g} s"
                if ended and self.watch is not None and self.watch.errors:
                    why = explain("\n".join(self.watch.errors), self._ep(), self.remote)
                self._set("disconnected", why)
                return  # the status goes out first; the next pass lists again
        self._connect()

    def _ep(self) -> str:
        return ",".join(self.ctl.endpoints)

    def _connect(self) -> None:
        """List the peer twice, a heartbeat period apart: a listing counts only if the
        peer's heartbeat moved in between (its cluster is alive and its export complete;
        an export etcd that outlived its cluster must not look connected)."""
        first = self._list()
        if first is None:
            return
        time.sleep(self.heartbeat_gap_s)
        listing = self._list()
        if listing is None:
            return
        hb = self.src_prefix + keys.HEARTBEAT
        beat = {kv.key: kv.mod_revision for kv in first.kvs}.get(hb)
        rels = {kv.key[len(self.src_prefix) :]: kv for kv in listing.kvs}
        if keys.HEARTBEAT not in rels or rels[keys.HEARTBEAT].mod_revision == beat:
            self._set(
                "connecting" if self.state == "connecting" else "disconnected",
                f"the export etcd of {self.remote} answers but its heartbeat stands still "
                "(its cluster etcd or its podlab-mesh is down)",
            )
            return
        info = _json(rels.get(keys.CLUSTERINFO))
        refused = refusal(self.own_info(), self.remote, info, self.accepted(self.remote))
        if refused:
            self._refuse(refused)
            return
        self._reconcile({r: kv.value for r, kv in rels.items() if keys.is_exported(r)})
        self.info = info
        self.beat = time.monotonic()
        self.last_heartbeat = rels[keys.HEARTBEAT].value.decode()
        self.watch = Watch(self.ctl, self.src_prefix, listing.revision + 1, self.on_response)
        self._set("connected", None)

    def _list(self) -> Listing | None:
        """One listing, or None with the state and error set (TLS trouble refuses)."""
        try:
            return self.ctl.list_prefix(self.src_prefix)
        except ToolError as exc:
            kind, why = classify(exc.output or "", self._ep(), self.remote)
            if kind == "unreachable":  # etcdctl hides TLS trust errors behind a timeout
                trust = tls_problem(self.ctl.endpoints[0], self.ctl.tls, self.remote)
                kind, why = ("tls", trust) if trust else (kind, why)
            if kind == "tls":
                self._refuse(why)
            elif self.state == "connected":
                self._set("disconnected", why)
            else:
                self._set(self.state if self.state != "refused" else "connecting", why)
        except ValueError as exc:
            self._set(self.state if self.state != "refused" else "connecting", str(exc))
        return None

    def _refuse(self, why: str) -> None:
        """Not a member: no mirror, no watch (nothing half-applied, nothing connected)."""
        self.close()
        if self.mirror or self.state != "refused":
            self.store.delete_prefix(keys.remote_prefix(self.local, self.remote))
            self.mirror = {}
            self.info = None
            self._status_written = ""
        self._set("refused", why)

    def _reconcile(self, want: dict[str, bytes]) -> None:
        """Make our mirror exactly ``want``: the re-list that recovers missed deletes."""
        prefix = keys.remote_prefix(self.local, self.remote)
        have_kvs, _ = self.store.get_prefix(prefix)
        have = {kv.key[len(prefix) :]: kv.value for kv in have_kvs}
        have.pop(keys.STATUS, None)
        puts: list[tuple[str, str | bytes]] = [
            (prefix + r, v) for r, v in want.items() if have.get(r) != v
        ]
        if puts:
            self.store.put_many(puts)
        gone = [r for r in have if r not in want]
        for r in gone:
            self.store.delete(prefix + r)
        with self.lock:
            self.mirror = dict(want)
            self.broken = False
        self.last_sync = now_rfc3339()
        log.info(
            "%s: listed %d keys, %d written, %d removed",
            self.remote,
            len(want),
            len(puts),
            len(gone),
        )

    # -- watch ---------------------------------------------------------------------------
    def on_response(
        self, events: list[WatchEvent], _rev: int, _cluster_id: int, error: str | None
    ) -> None:
        """Copy one watch response into our etcd (called on the watch's reader thread)."""
        if error:
            log.warning("%s: watch %s; re-listing", self.remote, error)
            self.broken = True
            return
        arrived = time.time()
        try:
            copied = self._apply(events)
        except StoreError as exc:
            log.warning("%s: local etcd: %s (re-listing when it answers)", self.remote, exc)
            self.broken = True
            return
        if self.trace and copied:
            log.info(
                "import trace %s: arrived %.4f written %.4f keys %d",
                self.remote,
                arrived,
                time.time(),
                copied,
            )

    def _apply(self, events: list[WatchEvent]) -> int:
        """Copy the exported keys among ``events``; how many changed our mirror."""
        prefix = keys.remote_prefix(self.local, self.remote)
        puts: dict[str, str | bytes] = {}
        changed = 0
        recheck = False
        with self.lock:
            for e in events:
                rel = e.kv.key[len(self.src_prefix) :]
                if rel == keys.HEARTBEAT:
                    self.beat = time.monotonic()
                    self.last_heartbeat = e.kv.value.decode()
                    continue
                if not keys.is_exported(rel):
                    continue
                recheck |= rel == keys.CLUSTERINFO
                if e.type == "DELETE":
                    if puts:
                        self.store.put_many(list(puts.items()))
                        puts.clear()
                    if self.mirror.pop(rel, None) is not None:
                        self.store.delete(prefix + rel)
                        changed += 1
                elif self.mirror.get(rel) != e.kv.value:
                    puts[prefix + rel] = e.kv.value
                    self.mirror[rel] = e.kv.value
                    changed += 1
            if puts:
                self.store.put_many(list(puts.items()))
        if changed:
            self.last_sync = now_rfc3339()
        if recheck:
            self.broken = True  # the peer changed its identity: check membership again
        return changed

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
            self.watch = None

    # -- status --------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.lock:
            mirror = dict(self.mirror)
        out = {k.rstrip("/"): 0 for k in keys.EXPORTED if k.endswith("/")}
        for rel in mirror:
            kind = rel.split("/", 1)[0]
            if kind in out:
                out[kind] += 1
        out["endpoints"] = count_endpoints(mirror)
        out["keys"] = len(mirror)
        return out

    def status(self) -> dict[str, Any]:
        return {
            "cluster": self.remote,
            "state": self.state,
            "connected": self.state == "connected",
            "since": self.since,
            "lastSync": self.last_sync,
            "lastHeartbeat": self.last_heartbeat,
            "endpoint": self._ep(),
            "counts": self.counts(),
            "lastError": self.last_error,
        }

    def write_status(self, force: bool = False) -> None:
        """On a state change at once, else at most every 5 s when something changed."""
        st = self.status()
        body = json.dumps({k: v for k, v in st.items() if k != "lastHeartbeat"}, sort_keys=True)
        due = time.monotonic() - self._status_at >= STATUS_EVERY_S
        urgent = json.loads(self._status_written or "{}").get("state") != self.state
        if body == self._status_written and not force:
            return
        if not (urgent or due or force):
            return
        try:
            self.store.put_json(keys.status_key(self.local, self.remote), st)
        except StoreError as exc:
            log.warning("%s: cannot write status: %s", self.remote, exc)
            return
        self._status_written, self._status_at = body, time.monotonic()


def _json(kv: KV | None) -> dict[str, Any] | None:
    if kv is None:
        return None
    try:
        obj = json.loads(kv.value)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def count_endpoints(mirror: Mapping[str, bytes]) -> int:
    """Ready pods selected by some Service of the peer (same namespace)."""
    pods: dict[tuple[str, str], dict[str, str]] = {}
    ready: set[tuple[str, str]] = set()
    selectors: list[tuple[str, dict[str, str]]] = []
    for rel, value in mirror.items():
        parts = rel.split("/")
        if len(parts) != 3:
            continue
        try:
            obj = json.loads(value)
        except ValueError:
            continue
        kind, ns, name = parts
        if kind == "pods":
            pods[(ns, name)] = dict((obj.get("metadata") or {}).get("labels") or {})
        elif kind == "podstatus":
            conds = obj.get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                ready.add((ns, name))
        elif kind == "services":
            sel = (obj.get("spec") or {}).get("selector")
            if sel:
                selectors.append((ns, dict(sel)))
    return sum(
        1
        for ref in ready
        if ref in pods
        and any(
            ns == ref[0] and all(pods[ref].get(k) == v for k, v in sel.items())
            for ns, sel in selectors
        )
    )
