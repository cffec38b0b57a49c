"""The export etcd, as the local syncer sees it: TLS, ``root`` by password, RBAC set-up.

etcd 3.4's JSON gateway ignores client-certificate CNs when auth is on (ADR
0004), so the local syncer authenticates as ``root`` with a password token
(``/v3/auth/authenticate``) over a TLS session that also presents a
certificate of the mesh CA (``--client-cert-auth`` wants one from everybody).
Peers never use this path: they read with ``etcdctl`` as ``remote-<peer>``.

``ensure_auth`` is idempotent: on a fresh export etcd it creates ``root``, the
read-only role ``mesh-reader`` (read on ``/podlab/v1/<cluster>/``) and enables
auth; ``sync_peers`` keeps one ``remote-<peer>`` user (no password: the CN is the
user) per configured peer, removing stale ones (Cilium's users manager).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import etcd3gw

from harness.agent.store import Store, StoreError, _b64, _range_end, cluster_prefix
from harness.mesh.config import Tls

log = logging.getLogger("podlab.mesh.export")

READER_ROLE = "mesh-reader"
PEER_PREFIX = "remote-"
_AUTH_ERRORS = ("invalid auth token", "user name is empty", "auth: revision in header is old")


class ExportStore(Store):
    """A ``Store`` on the export etcd: TLS with a mesh-CA certificate, ``root`` token."""

    def __init__(self, endpoint: str, tls: Tls, password_file: Path, timeout: float = 5.0):
        self.tls = tls
        self.password_file = password_file
        self._token: str | None = None
        super().__init__([endpoint], timeout)

    def _make(self, url: str) -> etcd3gw.Etcd3Client:
        client = super()._make(url)
        client.session.verify = str(self.tls.ca)
        client.session.cert = (str(self.tls.cert), str(self.tls.key))
        if self._token:
            client.session.headers["Authorization"] = self._token
        return client

    def _raw(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return super()._post(path, body)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._raw(path, body)
        except StoreError as exc:
            if not any(e in str(exc) for e in _AUTH_ERRORS):
                raise
        self.authenticate()  # the token expired (etcd drops idle simple tokens): once more
        return self._raw(path, body)

    def authenticate(self) -> None:
        """Get a fresh ``root`` token; StoreError if auth is off or the password is wrong."""
        password = self.password_file.read_text().strip()
        self._token = None
        self._client.session.headers.pop("Authorization", None)  # a stale token is refused
        r = self._raw("/auth/authenticate", {"name": "root", "password": password})
        self._token = str(r["token"])
        self._client.session.headers["Authorization"] = self._token

    # -- RBAC set-up -------------------------------------------------------------------
    def ensure_auth(self, cluster: str) -> None:
        """Users, the reader role and auth itself, whatever state etcd is in."""
        try:
            self.authenticate()
            enabled = True
        except StoreError as exc:
            if "authentication is not enabled" not in str(exc):
                raise
            enabled = False
        if not enabled:
            password = self.password_file.read_text().strip()
            self._ok("/auth/user/add", {"name": "root", "password": password})
            self._ok("/auth/user/grant", {"user": "root", "role": "root"})
        self._ok("/auth/role/add", {"name": READER_ROLE})
        prefix = cluster_prefix(cluster)
        perm = {"permType": "READ", "key": _b64(prefix), "range_end": _range_end(prefix)}
        self._post("/auth/role/grant", {"name": READER_ROLE, "perm": perm})
        if not enabled:
            self._raw("/auth/enable", {})
            self.authenticate()
            log.info("export etcd: auth enabled, role %s reads %s", READER_ROLE, prefix)

    def _ok(self, path: str, body: dict[str, Any]) -> None:
        """An auth call whose "already exists" answer is success (idempotent set-up)."""
        try:
            self._post(path, body)
        except StoreError as exc:
            if "already exists" not in str(exc) and "already granted" not in str(exc):
                raise

    def sync_peers(self, peers: list[str]) -> None:
        """Exactly one read-only user ``remote-<peer>`` per peer (no password)."""
        users = self._post("/auth/user/list", {}).get("users") or []
        have = {u for u in users if u.startswith(PEER_PREFIX)}
        want = {PEER_PREFIX + p for p in peers}
        for user in sorted(want - have):
            self._ok("/auth/user/add", {"name": user, "options": {"no_password": True}})
            self._ok("/auth/user/grant", {"user": user, "role": READER_ROLE})
            log.info("export etcd: peer user %s added (read-only)", user)
        for user in sorted(have - want):
            self._post("/auth/user/delete", {"name": user})
            log.info("export etcd: peer user %s removed", user)
