"""One etcd v3 client for every part of podlab (API, agent, services, mesh, controllers).

Transport is ``etcd3gw``'s HTTP session against etcd's gRPC gateway (``/v3/``
JSON; ADR 0003). The few calls it does not model the way we need (ranges with
the revision they were read at, guarded transactions, leases by ID, a watch
that survives restarts and compaction) are written here against the gateway's
JSON API. It imports nothing of podlab but ``harness.errors`` (pure, shared by
both sides), so the node agent and the host side can both use it without
crossing their boundary.

What it offers (docs/etcd-layout.md, "The client"):

- keys: ``get``, ``get_prefix`` (with the revision read), ``put``/``put_json``,
  ``put_many``, ``delete``, ``delete_prefix``;
- guarded writes: ``create`` (only if absent), ``replace_if`` / ``delete_if``
  (only if ``mod_revision`` is unchanged) and ``commit`` (many puts/deletes, each
  with its own revision check, all or nothing);
- leases: ``grant``, ``refresh``, ``time_to_live``, ``revoke``;
- ``watch_prefix`` (harness/store/watch.py): list, then follow; resume after a
  dropped stream, re-list after compaction;
- transport security: ``https://`` endpoints with a CA file and a client
  certificate and key (``TLS``), and etcd users (``user``/``password``, e.g. a
  read-only role for a remote cluster's reader).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw import exceptions as gwexc

from harness.errors import LabError

# etcd's default --max-txn-ops: a transaction with more operations is refused.
MAX_TXN_OPS = 128
POOL_SIZE = 64  # HTTP connections kept per endpoint
DEFAULT_PORT = 2379


class StoreError(LabError):
    """etcd refused a request (or could not be asked); the message names the endpoint.

    A LabError, so the CLI prints it as one line and the conformance plugin
    reports it like any other failure of the lab."""


class StoreUnreachable(StoreError):
    """No endpoint answered (connection refused, timed out, TLS handshake failed)."""


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


@dataclass(frozen=True)
class Write:
    """One operation of a ``commit``: a put (``value`` set) or a delete (``value`` None).

    ``expect_mod_revision`` 0 means "the key must not exist", None "do not
    check"; any other value is the mod_revision the writer last read, so a write
    based on a stale read fails instead of overwriting someone else's.
    """

    key: str
    value: bytes | None
    expect_mod_revision: int | None = None
    lease: int = 0


@dataclass
class Reading:
    """What ``Store.read`` found: each key's entry (None: absent), each prefix's entries."""

    revision: int
    keys: dict[str, KV | None] = field(default_factory=dict)
    prefixes: dict[str, list[KV]] = field(default_factory=dict)


@dataclass(frozen=True)
class TLS:
    """Files for an ``https://`` endpoint: the CA that signed etcd's certificate, and
    our client certificate and key when etcd asks for one (``--client-cert-auth``)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def check(self) -> None:
        """Refuse a half-given pair or a missing file before the first request."""
        if bool(self.cert_file) != bool(self.key_file):
            raise StoreError("a client certificate needs its key (and a key its certificate)")
        for name in (self.ca_file, self.cert_file, self.key_file):
            if name and not Path(name).is_file():
                raise StoreError(f"TLS file {name} does not exist")


def endpoint_url(text: str) -> str:
    """``host[:port]`` or a URL → ``scheme://host:port``; StoreError if it is not one."""
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https") or not parts.hostname or not port:
        raise StoreError(f"etcd endpoint {text!r} is not a URL like http://10.0.0.1:2379")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def range_end(prefix: str) -> str:
    """The etcd range end covering every key that starts with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


def kv_of(d: dict[str, Any]) -> KV:
    """A KV from the gateway's JSON form (base64 key and value, revisions as strings)."""
    return KV(
        key=unb64(d.get("key")).decode(),
        value=unb64(d.get("value")),
        create_revision=int(d.get("create_revision", 0)),
        mod_revision=int(d.get("mod_revision", 0)),
        lease=int(d.get("lease", 0)),
    )


class Store:
    """A client for one cluster's etcd; tries each endpoint in turn on connection errors."""

    def __init__(
        self,
        endpoints: list[str],
        timeout: float = 5.0,
        tls: TLS | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise StoreError("no etcd endpoints configured")
        self.endpoints = [endpoint_url(e) for e in endpoints]
        self.timeout = timeout
        self.tls = tls or TLS()
        self.tls.check()
        self._user, self._password = user, password
        self._token = ""
        self._lock = threading.Lock()
        self._i = 0
        self._client = self._make(self.endpoints[0])
        # called after every request with its gateway path and seconds (podlab load: where
        # an API call's time goes); None costs nothing
        self.on_call: Callable[[str, float], None] | None = None

    def _make(self, url: str) -> etcd3gw.Etcd3Client:
        u = urlsplit(url)
        session = requests.Session()
        session.trust_env = False  # etcd is in the lab: never via an environment proxy
        # requests keeps 10 connections per host: an 11th concurrent caller (podlab load's
        # workers, its sampler and watch) would open and drop a connection per request
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if self.tls.ca_file:
            session.verify = self.tls.ca_file
        if self.tls.cert_file and self.tls.key_file:
            session.cert = (self.tls.cert_file, self.tls.key_file)
        if self._token:
            session.headers["Authorization"] = self._token
        return etcd3gw.Etcd3Client(
            host=u.hostname or "127.0.0.1",
            port=u.port or DEFAULT_PORT,
            protocol=u.scheme,
            timeout=self.timeout,
            api_path="/v3/",
            session=session,
        )

    @property
    def url(self) -> str:
        """The endpoint in use now (the first one until it fails)."""
        return self.endpoints[self._i]

    @property
    def session(self) -> requests.Session:
        """The HTTP session of the endpoint in use (the watch streams over it)."""
        return self._client.session

    def gateway_url(self, path: str) -> str:
        return str(self._client.get_url(path))

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the gateway, rotating endpoints once round on connection errors."""
        if self._user and not self._token:
            self.login()
        last: Exception | None = None
        for _ in range(len(self.endpoints)):
            client, hook = self._client, self.on_call  # another thread may unhook it
            try:
                if hook is None:
                    return dict(client.post(client.get_url(path), json=body))
                t0 = time.monotonic()
                try:
                    return dict(client.post(client.get_url(path), json=body))
                finally:
                    hook(path, time.monotonic() - t0)
            except (gwexc.ConnectionFailedError, gwexc.ConnectionTimeoutError) as exc:
                last = exc
                self._rotate(client)
            except gwexc.Etcd3Exception as exc:
                detail = short_error(exc)
                if self._user and "invalid auth token" in detail:
                    self.login()  # simple tokens expire after --auth-token-ttl
                    return dict(self._client.post(self._client.get_url(path), json=body))
                raise StoreError(f"etcd at {self.url} refused {path}: {detail}") from exc
        raise StoreUnreachable(
            f"cannot reach etcd at {', '.join(self.endpoints)}: {short_error(last)}"
        )

    def _rotate(self, failed: etcd3gw.Etcd3Client) -> None:
        with self._lock:
            if self._client is failed:  # another thread may have rotated already
                self._i = (self._i + 1) % len(self.endpoints)
                self._client = self._make(self.endpoints[self._i])

    def login(self) -> None:
        """Trade user and password for a token that every later request carries."""
        if not self._user:
            return
        body = {"name": self._user, "password": self._password or ""}
        client = self._client
        # a token from before an etcd restart is refused even by /auth/authenticate
        client.session.headers.pop("Authorization", None)
        try:
            token = client.post(client.get_url("/auth/authenticate"), json=body).get("token", "")
        except gwexc.Etcd3Exception as exc:
            raise StoreError(
                f"etcd at {self.url} refused user {self._user!r}: {short_error(exc)}"
            ) from exc
        with self._lock:
            self._token = str(token)
            self._client.session.headers["Authorization"] = self._token

    # -- keys -----------------------------------------------------------------
    def get(self, key: str) -> KV | None:
        """The entry at ``key``, or None when it does not exist."""
        kvs = self._post("/kv/range", {"key": b64(key)}).get("kvs", [])
        return kv_of(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        """All keys under ``prefix`` (sorted by key) and the revision they were read at."""
        r = self._post("/kv/range", {"key": b64(prefix), "range_end": range_end(prefix)})
        return [kv_of(d) for d in r.get("kvs", [])], int(r["header"]["revision"])

    def count_prefix(self, prefix: str) -> int:
        """How many keys are under ``prefix``, without reading them (etcd's count_only)."""
        body = {"key": b64(prefix), "range_end": range_end(prefix), "count_only": True}
        return int(self._post("/kv/range", body).get("count", 0))

    def read(self, keys: list[str], prefixes: list[str] | None = None) -> Reading:
        """Several keys and prefixes in one round trip (a transaction of ranges), all read
        at one revision: what a caller would otherwise ask in as many calls, each a
        request through etcd's gateway (issue 15: a pod's apply made four reads before its
        write)."""
        ranges = [{"request_range": {"key": b64(k)}} for k in keys]
        for prefix in prefixes or []:
            ranges.append({"request_range": {"key": b64(prefix), "range_end": range_end(prefix)}})
        if len(ranges) > MAX_TXN_OPS:
            raise StoreError(f"{len(ranges)} reads exceed {MAX_TXN_OPS} per transaction")
        reply = self._post("/kv/txn", {"success": ranges})
        found = [
            [kv_of(d) for d in r.get("response_range", {}).get("kvs", [])]
            for r in reply.get("responses", [])
        ]
        found += [[]] * (len(ranges) - len(found))  # the gateway omits empty responses' fields
        out = Reading(revision=int(reply["header"]["revision"]))
        for k, kvs in zip(keys, found, strict=False):
            out.keys[k] = kvs[0] if kvs else None
        for prefix, kvs in zip(prefixes or [], found[len(keys) :], strict=False):
            out.prefixes[prefix] = kvs
        return out

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = lease
        return int(self._post("/kv/put", body)["header"]["revision"])

    def put_json(self, key: str, obj: Any, lease: int = 0) -> int:
        return self.put(key, json.dumps(obj, sort_keys=True), lease)

    def put_many(self, items: list[tuple[str, str | bytes]], batch: int = 100) -> int:
        """Write many keys in transactions of ``batch`` puts (etcd allows 128 per txn).

        Not atomic as a whole (use ``commit`` for that); for seeding many keys fast.
        """
        rev = 0
        for i in range(0, len(items), batch):
            ops = [
                {"request_put": {"key": b64(k), "value": b64(v)}} for k, v in items[i : i + batch]
            ]
            rev = int(self._post("/kv/txn", {"success": ops})["header"]["revision"])
        return rev

    def delete(self, key: str) -> bool:
        """Delete ``key``; True when it existed."""
        return int(self._post("/kv/deleterange", {"key": b64(key)}).get("deleted", 0)) > 0

    def delete_prefix(self, prefix: str) -> int:
        body = {"key": b64(prefix), "range_end": range_end(prefix)}
        return int(self._post("/kv/deleterange", body).get("deleted", 0))

    # -- guarded writes -------------------------------------------------------
    def create(self, key: str, value: str | bytes, lease: int = 0) -> bool:
        """Write ``key`` only if it does not exist (create_revision == 0): True if we won."""
        return self.commit([Write(key, _bytes(value), 0, lease)])

    def replace_if(self, key: str, value: str | bytes, mod_revision: int, lease: int = 0) -> bool:
        """Write ``key`` only if nobody changed it since ``mod_revision``."""
        return self.commit([Write(key, _bytes(value), mod_revision, lease)])

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete ``key`` only if nobody changed it since ``mod_revision``."""
        return self.commit([Write(key, None, mod_revision)])

    def commit(self, writes: list[Write]) -> bool:
        """Apply ``writes`` in one transaction if every revision check holds; False otherwise.

        Raises StoreError when the batch exceeds etcd's per-transaction limit:
        splitting it would silently give up atomicity.
        """
        return not writes or self.commit_revision(writes) is not None

    def commit_revision(self, writes: list[Write]) -> int | None:
        """``commit``, returning the revision the transaction wrote (the new
        ``mod_revision`` of every key it put), or None when a check failed. A cache
        that applies its own writes at once needs that revision to stay exact."""
        if not writes:
            return None
        if len(writes) > MAX_TXN_OPS:
            raise StoreError(
                f"{len(writes)} writes exceed etcd's limit of {MAX_TXN_OPS} "
                "operations per transaction"
            )
        compare: list[dict[str, Any]] = []
        success: list[dict[str, Any]] = []
        for w in writes:
            k = b64(w.key)
            if w.expect_mod_revision == 0:  # a missing key has create_revision 0
                compare.append(
                    {"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": 0}
                )
            elif w.expect_mod_revision is not None:
                compare.append(
                    {"key": k, "result": "EQUAL", "target": "MOD",
                     "mod_revision": w.expect_mod_revision}
                )  # fmt: skip
            if w.value is None:
                success.append({"request_delete_range": {"key": k}})
            else:
                put: dict[str, Any] = {"key": k, "value": b64(w.value)}
                if w.lease:
                    put["lease"] = w.lease
                success.append({"request_put": put})
        txn = {"compare": compare, "success": success, "failure": []}
        reply = self._post("/kv/txn", txn)
        if not reply.get("succeeded", False):
            return None
        return int(reply["header"]["revision"])

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
        resumes at the last revision seen plus one, so no change is lost or seen
        twice. A caller that already holds the state as of some revision passes
        ``start_revision`` (the first revision it has not seen) to skip the listing.
        """
        from harness.store.watch import follow

        follow(self, prefix, on_events, on_reset, stop, start_revision)


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def short_error(exc: Exception | None) -> str:
    """The useful part of a client error ("connection refused", etcd's own message)."""
    if exc is None:
        return "no endpoint tried"
    text = str(getattr(exc, "detail_text", None) or " ".join(str(a) for a in exc.args))
    text = text.strip()
    if text.startswith("{"):  # the gateway's JSON error body: {"error": …, "message": …}
        try:
            body = json.loads(text)
            text = str(body.get("message") or body.get("error") or text)
        except ValueError:
            pass
    text = text.splitlines()[0] if text else type(exc).__name__
    for marker in ("Connection refused", "timed out", "No route to host", "Name or service"):
        if marker in text:
            return marker.lower()
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS: etcd's certificate is not signed by the given CA"
    if "SSL" in text or "TLS" in text:
        return "TLS handshake failed: " + text[-160:]
    return text[:200]
