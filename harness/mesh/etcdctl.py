"""A peer's export etcd, read through ``etcdctl`` (native gRPC: the certificate's CN
is the etcd user, which the JSON gateway would ignore — ADR 0004).

``list_prefix`` is one ``etcdctl get --prefix -w json``; ``Watch`` runs
``etcdctl watch --prefix --rev N -w json`` as a child process and hands each
response line, parsed, to a callback. etcdctl reconnects by itself, so a dead
peer shows only as silence: the syncer judges liveness from the peer's heartbeat.
Errors are classified into words a user can act on (``explain``).
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from harness.errors import ToolError
from harness.exec import run
from harness.mesh.config import Tls
from harness.store import KV

log = logging.getLogger("podlab.mesh.etcdctl")


@dataclass(frozen=True)
class Listing:
    """A full listing: the keys, the revision read at, and the etcd cluster's id."""

    kvs: list[KV]
    revision: int
    cluster_id: int


@dataclass(frozen=True)
class WatchEvent:
    """One key change from a watch response (``DELETE`` has an empty value)."""

    type: str
    kv: KV


def _kv(d: dict[str, Any]) -> KV:
    return KV(
        key=base64.b64decode(d.get("key", "")).decode(),
        value=base64.b64decode(d.get("value", "") or ""),
        create_revision=int(d.get("create_revision", 0)),
        mod_revision=int(d.get("mod_revision", 0)),
        lease=int(d.get("lease", 0)),
    )


def explain(stderr: str, endpoint: str, peer: str) -> str:
    """One sentence with a fix for the usual failures of a TLS etcd connection."""
    return classify(stderr, endpoint, peer)[1]


def classify(stderr: str, endpoint: str, peer: str) -> tuple[str, str]:
    """``(kind, sentence)``; kind ``tls`` (a trust problem: refuse, stay disconnected),
    ``access`` (no read grant yet), ``unreachable`` or ``other``."""
    s = stderr.lower()
    kind, text = "tls", _tls_text(s, endpoint, peer)
    if text:
        return kind, text
    if "permission denied" in s or "user name not found" in s or "user name is empty" in s:
        return "access", (
            f"{peer} does not (yet) grant us read access: its syncer adds a read-only user "
            "for every peer it lists (fix: list this cluster in its remotes, podlab mesh join)"
        )
    if not s.strip() or "deadline exceeded" in s or "connection refused" in s or "no route" in s:
        return "unreachable", f"the export etcd of {peer} at {endpoint} does not answer"
    last = stderr.strip().splitlines()[-1]
    return "other", f"etcdctl failed against {peer} at {endpoint}: {last}"


def _tls_text(s: str, endpoint: str, peer: str) -> str | None:
    if "certificate signed by unknown authority" in s:
        return (
            f"the export etcd of {peer} at {endpoint} presents a certificate of an unknown CA "
            "(fix: deploy both clusters with the same mesh CA, e.g. podlab deploy LAB "
            "--mesh-ca .podlab/OTHER_LAB/mesh/MESH)"
        )
    if "bad certificate" in s or "unknown certificate authority" in s:
        return (
            f"the export etcd of {peer} at {endpoint} refuses our client certificate: it trusts "
            "another CA (fix: deploy both clusters with the same mesh CA, --mesh-ca)"
        )
    if "certificate is valid for" in s:
        return (
            f"the certificate of {peer}'s export etcd does not name {endpoint} "
            "(fix: redeploy that cluster so its certificate is re-issued)"
        )
    return None


def tls_problem(endpoint: str, tls: Tls, peer: str, timeout: float = 3.0) -> str | None:
    """Why TLS to ``endpoint`` fails (a trust problem), or None if it works or the
    endpoint simply does not answer. etcdctl hides handshake errors behind "context
    deadline exceeded", so the syncer asks this once a listing failed that way."""
    u = urlsplit(endpoint)
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    ctx.check_hostname = False  # etcd certificates name IP addresses; the CA is ours
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    try:
        addr = (u.hostname or "", u.port or 2379)
        with socket.create_connection(addr, timeout=timeout) as raw, ctx.wrap_socket(raw) as conn:
            conn.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            conn.recv(64)  # TLS 1.3: a refused client certificate shows here
    except ssl.SSLCertVerificationError as exc:
        why = str(exc).lower()
        if "mismatch" in why:
            return _tls_text("certificate is valid for", endpoint, peer)
        # unknown issuer, or a CA of the same name with another key ("signature failure")
        return _tls_text("certificate signed by unknown authority", endpoint, peer)
    except ssl.SSLError as exc:
        return _tls_text(f"bad certificate {exc}".lower(), endpoint, peer)
    except OSError:
        return None
    return None


class Etcdctl:
    """etcdctl argv for one peer: endpoints, TLS files, timeouts."""

    def __init__(self, binary: str, endpoints: list[str], tls: Tls) -> None:
        self.binary = binary
        self.endpoints = endpoints
        self.tls = tls

    def argv(self, *args: str, timeout_s: float = 3.0) -> list[str]:
        return [
            self.binary,
            f"--endpoints={','.join(self.endpoints)}",
            f"--cacert={self.tls.ca}",
            f"--cert={self.tls.cert}",
            f"--key={self.tls.key}",
            "--dial-timeout=2s",
            f"--command-timeout={timeout_s:g}s",
            *args,
        ]

    def list_prefix(self, prefix: str, timeout_s: float = 5.0) -> Listing:
        """Everything under ``prefix``; ToolError (stderr kept) when etcd refuses."""
        res = run(
            self.argv("get", "--prefix", prefix, "-w", "json", timeout_s=timeout_s),
            timeout=timeout_s + 3,
        )
        data = json.loads(res.stdout)
        header = data.get("header", {})
        kvs = [_kv(d) for d in data.get("kvs") or []]
        return Listing(kvs, int(header.get("revision", 0)), int(header.get("cluster_id", 0)))


class Watch:
    """``etcdctl watch`` in a child process; ``on_response`` gets every parsed line.

    ``on_response(events, revision, cluster_id, error)``: ``error`` is set (and
    events empty) when the watch was compacted or cancelled — the caller re-lists.
    """

    def __init__(
        self,
        ctl: Etcdctl,
        prefix: str,
        start_revision: int,
        on_response: Callable[[list[WatchEvent], int, int, str | None], None],
    ) -> None:
        argv = ctl.argv("watch", "--prefix", prefix, "--rev", str(start_revision), "-w", "json")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.on_response = on_response
        self.errors: list[str] = []  # etcdctl's last stderr lines (drained: a full pipe stalls it)
        self.thread = threading.Thread(target=self._read, name=f"watch {prefix}", daemon=True)
        self.thread.start()
        threading.Thread(target=self._drain, name=f"stderr {prefix}", daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors = [*self.errors[-19:], line.rstrip()]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except ValueError:
                log.warning("unreadable watch line: %.200s", line)
                continue
            header = r.get("Header") or {}
            rev = int(header.get("revision", 0))
            cid = int(header.get("cluster_id", 0))
            if int(r.get("CompactRevision") or 0) > 0:
                self.on_response([], rev, cid, "compacted")
                return
            if r.get("Canceled"):
                self.on_response([], rev, cid, "cancelled")
                return
            events = [
                WatchEvent("DELETE" if e.get("type") == 1 else "PUT", _kv(e["kv"]))
                for e in r.get("Events") or []
            ]
            self.on_response(events, rev, cid, None)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the child by its pid (never by name) and reap it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=2)


__all__ = ["Etcdctl", "Listing", "ToolError", "Watch", "WatchEvent", "explain"]
