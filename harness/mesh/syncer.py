"""``podlab-mesh``: one cluster's mesh syncer (Cilium's KVStoreMesh, ADR 0004).

Runs on the cluster's control-plane node under the supervisor. Start-up: load
mesh.yaml, wait for the cluster's etcd, publish ``clusterinfo``, start the
exporter (local etcd → export etcd, heartbeat) and one ``RemoteLink`` per file
in the remotes directory (peer export etcd → ``mesh/<peer>/`` in the local
etcd). The remotes directory is re-read every 2 s: a new file joins a peer, a
removed file drops the peer and its mirror. SIGTERM stops the links and leaves
every mirrored key in place (a restart must not flap routes or backends).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from harness import __version__, daemon
from harness.mesh import keys
from harness.mesh.config import DEFAULT_PATH, ConfigError, MeshConfig, Remote, load, load_remotes
from harness.mesh.etcdctl import Etcdctl
from harness.mesh.exportdb import ExportStore
from harness.mesh.exporter import Exporter, now_rfc3339
from harness.mesh.importer import RemoteLink
from harness.store import Store, StoreError, wait_ready
from harness.store.keys import cluster_prefix

log = logging.getLogger("podlab.mesh")

RESCAN_S = 2.0
CHECK_EVERY_S = 0.2  # --check --wait: how often it looks at clusterinfo


def ca_fingerprint(path: str) -> str:
    """``sha256:<hex>`` of the mesh CA certificate's DER (the deploy computes the same;
    PEM is base64 of the DER, so no crypto library is needed on the node)."""
    with open(path) as f:
        lines = f.read().split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END", 1)[0]
    der = base64.b64decode("".join(lines.split()))
    return "sha256:" + hashlib.sha256(der).hexdigest()


def clusterinfo(cfg: MeshConfig) -> dict[str, Any]:
    return {
        "name": cfg.cluster,
        "id": cfg.cluster_id,
        "mesh": cfg.mesh,
        "podCIDR": str(cfg.pod_cidr),
        "serviceCIDR": str(cfg.service_cidr),
        "mode": cfg.mode,
        "encryption": cfg.encryption,
        "routing": cfg.routing,
        "caFingerprint": ca_fingerprint(str(cfg.peer_tls.ca)),
        "exportEndpoint": cfg.export_endpoint,
        "syncerVersion": __version__,
    }


class Syncer:
    """The exporter plus one link per peer; ``run()`` until ``stop`` is set."""

    def __init__(self, cfg: MeshConfig) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.local = Store(cfg.etcd_endpoints)
        self.export = ExportStore(cfg.export_endpoint, cfg.export_tls, cfg.password_file)
        self.info = clusterinfo(cfg)
        self.exporter = Exporter(
            cfg.cluster,
            self.local,
            self.export,
            self.info,
            [],
            cfg.heartbeat_s,
            cfg.resync_s,
            trace=cfg.trace,
        )
        self.links: dict[str, tuple[Remote, RemoteLink, threading.Event]] = {}

    def accepted(self, except_: str) -> Mapping[str, Mapping[str, Any]]:
        """clusterinfo of every connected or disconnected (= once accepted) peer."""
        return {
            name: link.info
            for name, (_, link, _) in self.links.items()
            if name != except_ and link.info is not None
        }

    def start(self) -> None:
        wait_ready(self.local, timeout=60)
        self.info["started"] = now_rfc3339()
        self.exporter.publish_clusterinfo()
        self.rescan(initial=True)
        threading.Thread(
            target=self.local.watch_prefix,
            args=(
                cluster_prefix(self.cfg.cluster),
                self.exporter.on_events,
                self.exporter.on_reset,
                self.stop,
            ),
            name="export-watch",
            daemon=True,
        ).start()
        threading.Thread(
            target=self.exporter.run_heartbeat, args=(self.stop,), name="heartbeat", daemon=True
        ).start()

    def rescan(self, initial: bool = False) -> None:
        """Start, restart or drop links to match the remotes directory."""
        remotes, problems = load_remotes(self.cfg.remotes_dir, self.cfg.cluster)
        for p in problems:
            log.warning("%s", p)
        for name in list(self.links):
            remote, _link, _ = self.links[name]
            if remotes.get(name) != remote:
                self._drop(name, forget=name not in remotes)
        if initial:  # mirrors of peers that left the configuration while we were down
            kvs, _ = self.local.get_prefix(keys.mesh_prefix(self.cfg.cluster))
            stale = {k.split("/")[5] for k in (kv.key for kv in kvs)} - set(remotes)
            for name in sorted(stale):
                log.info("%s: no longer configured; removing its mirror", name)
                self.local.delete_prefix(keys.remote_prefix(self.cfg.cluster, name))
        for name, remote in remotes.items():
            if name not in self.links:
                self._add(remote)
        if set(self.exporter.peers) != set(remotes):
            try:
                self.exporter.set_peers(sorted(remotes))
            except StoreError as exc:
                log.warning("export etcd: cannot update peer users: %s", exc)
                self.exporter.ready = False

    def _add(self, remote: Remote) -> None:
        ctl = Etcdctl(self.cfg.etcdctl, remote.endpoints, self.cfg.peer_tls)
        link = RemoteLink(
            self.cfg.cluster,
            remote.name,
            ctl,
            Store(self.cfg.etcd_endpoints),
            lambda: self.info,
            self.accepted,
            self.cfg.dead_after_s,
            self.cfg.heartbeat_s * 1.2,
            trace=self.cfg.trace,
        )
        stop = threading.Event()
        self.links[remote.name] = (remote, link, stop)
        threading.Thread(
            target=link.run, args=(stop,), name=f"link-{remote.name}", daemon=True
        ).start()
        log.info("%s: joining via %s", remote.name, ", ".join(remote.endpoints))

    def _drop(self, name: str, forget: bool) -> None:
        _remote, link, stop = self.links.pop(name)
        stop.set()
        link.close()
        if forget:  # removed from the configuration: its mirror goes too (Cilium's onRemove)
            log.info("%s: removed from the mesh configuration; removing its mirror", name)
            self.local.delete_prefix(keys.remote_prefix(self.cfg.cluster, name))

    def run(self) -> None:
        while not self.stop.wait(RESCAN_S):
            try:
                self.rescan()
            except StoreError as exc:
                log.warning("local etcd: %s", exc)
        for name in list(self.links):
            _r, link, stop = self.links.pop(name)
            stop.set()
            link.close()
        log.info("stopped; mirrored keys left in place")


def check(cfg: MeshConfig, since: float = 0.0, wait_s: float = 0.0) -> int:
    """``--check``: 0 once this syncer has published ``clusterinfo`` (the deploy waits
    for it); prints every peer's state as the syncer last wrote it.

    ``since`` (epoch seconds; the deploy passes the moment the restarted syncer's
    predecessor was gone): only a ``clusterinfo`` whose ``started`` is at least that
    recent counts, so the one the old process published does not pass for the new
    one (which rewrites it at the end of its start-up). ``wait_s``: look again every
    0.2 s (two reads from the local etcd) until it passes or the time is up.
    """
    deadline = time.monotonic() + wait_s
    while True:
        ok, message = _check_once(cfg, since)
        if ok or time.monotonic() >= deadline:
            break
        time.sleep(min(CHECK_EVERY_S, max(0.0, deadline - time.monotonic())))
    print(message if ok else f"unhealthy: {message}")
    return 0 if ok else 1


def _check_once(cfg: MeshConfig, since: float) -> tuple[bool, str]:
    try:
        store = Store(cfg.etcd_endpoints, timeout=3)
        kv = store.get(keys.clusterinfo_key(cfg.cluster))
        kvs, _ = store.get_prefix(keys.mesh_prefix(cfg.cluster))
    except StoreError as exc:
        return False, str(exc)
    if kv is None:
        return False, f"no clusterinfo for {cfg.cluster} yet (podlab-mesh starting?)"
    if since:
        started = str(kv.json().get("started", ""))
        try:
            at = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return False, f"clusterinfo of {cfg.cluster} has no readable start time"
        if at < since:
            return False, (
                f"clusterinfo of {cfg.cluster} is the previous syncer's (started "
                f"{since - at:.1f}s before the restart)"
            )
    states = []
    for s in kvs:
        if s.key.endswith("/" + keys.STATUS):
            st = s.json()
            states.append(f"{st.get('cluster')} {st.get('state')}")
    return True, f"ok: {cfg.cluster} in mesh {cfg.mesh}; peers: {', '.join(states) or 'none yet'}"


def main(argv: list[str] | None = None) -> int:
    args = daemon.parse_args(
        "podlab-mesh",
        __doc__,
        DEFAULT_PATH,
        "mesh.yaml (default %(default)s)",
        "exit 0 once clusterinfo is published",
        argv,
        check_waits=True,
    )
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(f"podlab-mesh: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return check(cfg, args.since, args.wait)
    ready = daemon.ReadyFile(args.ready_file, args.config)
    syncer = Syncer(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: syncer.stop.set())
    try:
        syncer.start()
    except StoreError as exc:
        log.error("start-up failed: %s", exc)
        return 1
    ready.write()  # clusterinfo is published (the deploy's proof, --ready-file)
    syncer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
