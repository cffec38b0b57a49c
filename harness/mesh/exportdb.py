"""The export etcd, as the local syncer sees it: TLS, ``root`` by password, RBAC set-up.

etcd 3.4's JSON gateway ignores client-certificate CNs when auth is on (ADR
0004), so the local syncer logs in as ``root`` with a password token over a TLS
session that presents a CN-less certificate of the mesh CA
(``--client-cert-auth`` wants one from everybody). Peers never use this path:
they read with ``etcdctl`` as ``remote-<peer>``.

``ensure_auth`` is idempotent: on a fresh export etcd it creates ``root``, the
read-only role ``mesh-reader`` (read on ``/podlab/v1/<cluster>/``) and enables
auth; ``sync_peers`` keeps one ``remote-<peer>`` user (no password: the CN is the
user) per configured peer, removing stale ones (Cilium's users manager).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness.mesh.config import Tls
from harness.store import TLS, Store, StoreError
from harness.store.client import b64, range_end
from harness.store.keys import cluster_prefix

log = logging.getLogger("podlab.mesh.export")

READER_ROLE = "mesh-reader"
PEER_PREFIX = "remote-"


class ExportStore(Store):
    """A ``Store`` on the export etcd: TLS with a mesh-CA certificate, user ``root``."""

    def __init__(self, endpoint: str, tls: Tls, password_file: Path, timeout: float = 5.0):
        self.password_file = password_file
        files = TLS(str(tls.ca), str(tls.cert), str(tls.key))
        super().__init__(
            [endpoint], timeout, tls=files, user="root", password=self._read_password()
        )

    def _read_password(self) -> str:
        return self.password_file.read_text().strip()

    # -- RBAC set-up -------------------------------------------------------------------
    def ensure_auth(self, cluster: str) -> None:
        """Users, the reader role and auth itself, whatever state etcd is in."""
        try:
            self.login()
            enabled = True
        except StoreError as exc:
            if "authentication is not enabled" not in str(exc):
                raise
            enabled = False
        if not enabled:  # a fresh export etcd: set up as nobody, then turn auth on
            self._user = None
            try:
                self._ok("/auth/user/add", {"name": "root", "password": self._read_password()})
                self._ok("/auth/user/grant", {"user": "root", "role": "root"})
                self._setup_role(cluster)
                self._post("/auth/enable", {})
            finally:
                self._user = "root"
            self.login()
            log.info("export etcd: auth enabled, role %s reads %s", READER_ROLE, cluster)
        else:
            self._setup_role(cluster)

    def _setup_role(self, cluster: str) -> None:
        prefix = cluster_prefix(cluster)
        self._ok("/auth/role/add", {"name": READER_ROLE})
        perm = {"permType": "READ", "key": b64(prefix), "range_end": range_end(prefix)}
        self._post("/auth/role/grant", {"name": READER_ROLE, "perm": perm})

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
