"""etcd v3 access for podlab: keys, transactions, leases and resumable watches.

Both sides use this module (the agent, and the host side's ``podlab apply/get``),
so it imports no kernel code. Transport is the ``etcd3gw`` client (etcd's
HTTP/JSON gateway); the few calls it does not model the way we need (ranges with
revisions, compare-and-create, a watch that survives etcd restarts and
compaction) are written here against the gateway's ``/v3/`` JSON API.

Key layout: see docs/etcd-layout.md and the ``*_key`` helpers below.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw import exceptions as gwexc

log = logging.getLogger("podlab.store")

ROOT = "/podlab/v1"
#: A watch stream silent this long is re-opened (quietly): it also notices a dead
#: etcd behind a half-open connection. Resuming costs one request.
IDLE_S = 60.0


def cluster_prefix(cluster: str) -> str:
    """``/podlab/v1/<cluster>/``: everything one cluster keeps in its etcd."""
    return f"{ROOT}/{cluster}/"


def mesh_prefix(cluster: str) -> str:
    """``/podlab/v1/<cluster>/mesh/``: the mesh syncer's mirror of the other clusters
    (harness/mesh/keys.py has the rest of that layout)."""
    return f"{ROOT}/{cluster}/mesh/"


def node_key(cluster: str, node: str) -> str:
    return f"{ROOT}/{cluster}/nodes/{node}"


def subnet_key(cluster: str, subnet: str) -> str:
    """Subnet leases are keyed ``a.b.c.d-len`` (a ``/`` would split the key path)."""
    return f"{ROOT}/{cluster}/subnets/{subnet.replace('/', '-')}"


def pod_key(cluster: str, namespace: str, name: str) -> str:
    return f"{ROOT}/{cluster}/pods/{namespace}/{name}"


def podstatus_key(cluster: str, namespace: str, name: str) -> str:
    return f"{ROOT}/{cluster}/podstatus/{namespace}/{name}"


class StoreError(Exception):
    """etcd could not be reached or refused a request."""


@dataclass(frozen=True)
class KV:
    """One key as etcd returns it (value still bytes; see ``json``)."""

    key: str
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    lease: int = 0

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True)
class Event:
    """A watch event: ``PUT`` (value set) or ``DELETE`` (value empty)."""

    type: str
    kv: KV


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def _range_end(prefix: str) -> str:
    """The etcd range end covering every key that starts with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


def _kv(d: dict[str, Any]) -> KV:
    return KV(
        key=_unb64(d.get("key")).decode(),
        value=_unb64(d.get("value")),
        create_revision=int(d.get("create_revision", 0)),
        mod_revision=int(d.get("mod_revision", 0)),
        lease=int(d.get("lease", 0)),
    )


class Store:
    """A client for one cluster's etcd; tries each endpoint in turn on failure."""

    def __init__(self, endpoints: list[str], timeout: float = 5.0) -> None:
        if not endpoints:
            raise StoreError("no etcd endpoints configured")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._i = 0
        self._client = self._make(self.endpoints[0])

    def _make(self, url: str) -> etcd3gw.Etcd3Client:
        u = urlsplit(url if "://" in url else f"http://{url}")
        session = requests.Session()
        session.trust_env = False  # etcd is in the lab: never via an environment proxy
        return etcd3gw.Etcd3Client(
            host=u.hostname or "127.0.0.1",
            port=u.port or 2379,
            protocol=u.scheme or "http",
            timeout=self.timeout,
            api_path="/v3/",
            session=session,
        )

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the gateway, rotating endpoints once round on connection errors."""
        last: Exception | None = None
        for _ in range(len(self.endpoints)):
            try:
                return dict(self._client.post(self._client.get_url(path), json=body))
            except (gwexc.ConnectionFailedError, gwexc.ConnectionTimeoutError) as exc:
                last = exc
                self._i = (self._i + 1) % len(self.endpoints)
                self._client = self._make(self.endpoints[self._i])
            except gwexc.Etcd3Exception as exc:
                raise StoreError(f"etcd refused {path}: {exc.detail_text}") from exc
        raise StoreError(f"etcd unreachable at {', '.join(self.endpoints)}: {last}")

    # -- keys -----------------------------------------------------------------
    def get(self, key: str) -> KV | None:
        kvs = self._post("/kv/range", {"key": _b64(key)}).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        """All keys under ``prefix`` and the store revision they were read at."""
        r = self._post("/kv/range", {"key": _b64(prefix), "range_end": _range_end(prefix)})
        return [_kv(d) for d in r.get("kvs", [])], int(r["header"]["revision"])

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        return int(self._post("/kv/put", body)["header"]["revision"])

    def put_json(self, key: str, obj: Any, lease: int = 0) -> int:
        return self.put(key, json.dumps(obj, sort_keys=True), lease)

    def put_many(self, items: list[tuple[str, str | bytes]], batch: int = 100) -> int:
        """Write many keys in transactions of ``batch`` puts (etcd allows 128 per txn)."""
        rev = 0
        for i in range(0, len(items), batch):
            ops = [
                {"request_put": {"key": _b64(k), "value": _b64(v)}} for k, v in items[i : i + batch]
            ]
            rev = int(self._post("/kv/txn", {"success": ops})["header"]["revision"])
        return rev

    def delete(self, key: str) -> bool:
        return int(self._post("/kv/deleterange", {"key": _b64(key)}).get("deleted", 0)) > 0

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete ``key`` only if nobody changed it since ``mod_revision``."""
        cmp = {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": mod_revision}
        txn = {"compare": [cmp], "success": [{"request_delete_range": {"key": _b64(key)}}]}
        return bool(self._post("/kv/txn", txn).get("succeeded", False))

    def delete_prefix(self, prefix: str) -> int:
        body = {"key": _b64(prefix), "range_end": _range_end(prefix)}
        return int(self._post("/kv/deleterange", body).get("deleted", 0))

    def _txn_put(self, key: str, value: str | bytes, lease: int, compare: dict[str, Any]) -> bool:
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = lease
        txn = {"compare": [{"key": _b64(key), **compare}], "success": [{"request_put": put}]}
        return bool(self._post("/kv/txn", txn).get("succeeded", False))

    def create(self, key: str, value: str | bytes, lease: int = 0) -> bool:
        """Write ``key`` only if it does not exist (create_revision == 0): True if we won."""
        cmp = {"result": "EQUAL", "target": "CREATE", "create_revision": 0}
        return self._txn_put(key, value, lease, cmp)

    def replace_if(self, key: str, value: str | bytes, mod_revision: int, lease: int = 0) -> bool:
        """Write ``key`` only if nobody changed it since ``mod_revision``."""
        cmp = {"result": "EQUAL", "target": "MOD", "mod_revision": mod_revision}
        return self._txn_put(key, value, lease, cmp)

    # -- leases ---------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        return int(self._post("/lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def refresh(self, lease: int) -> int:
        """Keep a lease alive; returns its TTL, or -1 if it has already expired."""
        r = self._post("/lease/keepalive", {"ID": lease})
        return int(r.get("result", {}).get("TTL", -1))

    def time_to_live(self, lease: int) -> int:
        """Remaining TTL of a lease, -1 if unknown/expired."""
        return int(self._post("/kv/lease/timetolive", {"ID": lease}).get("TTL", -1))

    def revoke(self, lease: int) -> None:
        self._post("/kv/lease/revoke", {"ID": lease})

    # -- watches --------------------------------------------------------------
    def watch_prefix(
        self,
        prefix: str,
        on_events: Callable[[list[Event]], None],
        on_reset: Callable[[list[KV]], None],
        stop: threading.Event,
        start_revision: int = 0,
    ) -> None:
        """Follow ``prefix`` until ``stop`` is set, surviving etcd restarts.

        ``on_reset`` receives the full listing first (and again whenever etcd has
        compacted away the revisions we would need to resume); ``on_events`` gets
        every change after that, in order. After a dropped stream the watch
        resumes at the last revision seen plus one, so no change is lost twice or
        skipped. A caller that already holds the state as of some revision passes
        ``start_revision`` (the first revision it has not seen) to skip the listing.
        """
        rev = start_revision - 1 if start_revision > 0 else 0
        while not stop.is_set():
            try:
                if rev == 0:
                    kvs, header_rev = self.get_prefix(prefix)
                    on_reset(kvs)
                    rev = header_rev
                rev = self._stream(prefix, rev + 1, on_events, stop)
            except _Idle as exc:
                # no event for a while (or the gateway's own timeout): just resume
                log.debug("watch %s idle (%s); resuming from revision %d", prefix, exc, rev + 1)
                rev = exc.last
            except _Compacted as exc:
                log.warning("watch %s: revision compacted (%s); re-listing", prefix, exc)
                rev = 0
            except (StoreError, requests.RequestException, ValueError, KeyError) as exc:
                log.warning("watch %s: %s; retrying from revision %d", prefix, exc, rev + 1)
                stop.wait(1.0)

    def _stream(
        self,
        prefix: str,
        start: int,
        on_events: Callable[[list[Event]], None],
        stop: threading.Event,
    ) -> int:
        """One watch stream from ``start``; returns the last revision seen when it ends.

        Raises _Idle (with the last revision) when the stream merely went quiet.
        """
        create: dict[str, Any] = {
            "key": _b64(prefix),
            "range_end": _range_end(prefix),
            "start_revision": start,
            "progress_notify": True,
        }
        last = start - 1
        with self._client.session.post(
            self._client.get_url("/watch"),
            json={"create_request": create},
            stream=True,
            timeout=(self.timeout, IDLE_S),
        ) as resp:
            if resp.status_code == 408:  # the gateway ends long-idle streams itself
                raise _Idle(last, "gateway request timeout")
            resp.raise_for_status()
            lines = resp.iter_lines(chunk_size=None)  # type: ignore[call-overload]
            while not stop.is_set():
                try:
                    line = next(lines)
                except StopIteration:
                    break
                except requests.exceptions.ConnectionError as exc:
                    if "timed out" in str(exc):
                        raise _Idle(last, "read timed out") from exc
                    raise
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                if int(result.get("compact_revision", 0) or 0) > 0:
                    raise _Compacted(result["compact_revision"])
                if result.get("canceled"):
                    raise StoreError(f"watch canceled: {result.get('cancel_reason', '')}")
                events = [
                    Event(e.get("type", "PUT"), _kv(e["kv"])) for e in result.get("events", [])
                ]
                if events:
                    on_events(events)
                    last = max(last, max(e.kv.mod_revision for e in events))
        return last


class _Compacted(Exception):
    pass


class _Idle(Exception):
    """The stream ended quietly (idle timeout); resume after revision ``last``."""

    def __init__(self, last: int, why: str) -> None:
        super().__init__(why)
        self.last = last


def wait_ready(store: Store, timeout: float = 30.0) -> None:
    """Block until etcd answers, so start-up ordering between etcd and agents is free."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            store.get_prefix(ROOT + "/")
            return
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
