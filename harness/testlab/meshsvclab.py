"""Two clusters of real agents, each with its own etcd, for global-service tests and benches.

Built on agentlab's fabric namespace, which routes between two L2 segments:

    cluster t1: nodes n1, n2 … on "fabric" (br0, 10.199.0.0/24), pod CIDR
                10.244.0.0/16, etcd 10.199.0.254:2379
    cluster t2: nodes n11, n12 … on "edge" (br1, 10.198.0.0/24), pod CIDR
                10.245.0.0/16, etcd 10.198.0.254:2379 (its own process)

The fabric namespace is the lab's router: it carries a route to every node's
pod subnet (native routing, as BGP would teach a top-of-rack router), and
every node routes the other cluster's pod CIDR through it. ``cut()`` drops
what the router forwards between the two segments (a cut link: pod traffic
and the data-path probes die; both etcds, local to the router namespace, stay
reachable), ``heal()`` undoes it; ``stop_etcd("t2")`` / ``start_etcd("t2")``
take a cluster's control plane away and back.

The mesh syncer's part — each cluster's keys mirrored into the other's etcd
under ``/podlab/v1/<local>/mesh/<remote>/`` — is played either by ``Mirror``, a
plain copier over the same watch the agents use, written to the syncer's
key contract (docs/etcd-layout.md, "Cluster mesh"), or by the real thing
(``start_mirrors("syncer")``: ``SyncerProcess``, each cluster's ``podlab-mesh``
beside its TLS export etcd on the cluster's control-plane node, run with the
flags the deploy's mesh role renders, certificates of a per-mesh CA made by
the deploy's own code: the components and hops of a deployed mesh).
Like the syncer, ``Mirror`` keeps every mirrored key while the source is
unreachable and, on a re-list, deletes the keys the source no longer has.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from pyroute2 import IPRoute

from harness.deploy import meshpki
from harness.exec import run
from harness.inventory import MESH_EXPORT_PORT
from harness.mesh import keys as mesh_keys
from harness.store import KV, Event, Store
from harness.store.keys import cluster_prefix, pod_key, podstatus_key
from harness.testlab.agentlab import (
    EDGE,
    EDGE_GW,
    ETCD_IP,
    NET,
    PROJECT,
    PYTHON,
    AgentLab,
    Node,
    forward,
)
from harness.testlab.wait import wait_for

CLUSTERS = {"t1": "10.244.0.0/16", "t2": "10.245.0.0/16"}
ETCD_URL = {"t1": f"http://{ETCD_IP}:2379", "t2": f"http://{EDGE_GW}:2379"}
CUT_TABLE = "meshsvc-cut"
MESH = "bench"
TRACE_LINE = re.compile(
    r"(export|import) trace(?: \S+)?: arrived ([\d.]+) written ([\d.]+) keys (\d+)"
)


class Mirror:
    """Copies cluster ``src``'s exported keys into ``dst``'s etcd under mesh/<src>/."""

    def __init__(
        self, src: str, src_store: Store, dst: str, dst_store: Store, trace_to: Path | None = None
    ) -> None:
        self.src, self.dst = src, dst
        self.trace_to = trace_to  # a child process's trace goes to this file (MirrorProcess)
        self.src_store, self.dst_store = src_store, dst_store
        self.base = cluster_prefix(src)
        self.into = f"{cluster_prefix(dst)}mesh/{src}/"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"mirror-{src}")
        # (wall time a batch of the source's events arrived, wall time it was written,
        # keys copied): the bench's per-hop figures (bench/bench_mesh.py, prog)
        self.trace: collections.deque[tuple[float, float, int]] = collections.deque(maxlen=1000)

    def start(self) -> None:
        self.thread.start()

    def _rel(self, key: str) -> str | None:
        """The syncer's own rule (``harness.mesh.keys.is_exported``): the mirrors of both
        kinds hold the same keys, so switching kinds changes nothing the agents see."""
        rel = key[len(self.base) :]
        return rel if mesh_keys.is_exported(rel) else None

    def _run(self) -> None:
        self.src_store.watch_prefix(self.base, self._events, self._reset, self.stop)

    def _reset(self, kvs: list[KV]) -> None:
        want = {rel: kv.value for kv in kvs if (rel := self._rel(kv.key))}
        have, _ = self.dst_store.get_prefix(self.into)
        for kv in have:
            rel = kv.key[len(self.into) :]
            if rel != "status" and rel not in want:
                self.dst_store.delete(kv.key)
        self.dst_store.put_many([(self.into + rel, v) for rel, v in want.items()])
        self._status()

    def _events(self, events: list[Event]) -> None:
        """One batch of the source's events → puts in transactions of up to 100 (one value
        per key: etcd refuses a key twice in one transaction), deletes in order."""
        if self.stop.is_set():  # closed: its watch reads one more response before it ends
            return
        arrived, copied = time.time(), 0
        puts: dict[str, bytes] = {}
        for e in events:
            rel = self._rel(e.kv.key)
            if rel is None:
                continue
            copied += 1
            if e.type == "DELETE":
                self._flush(puts)
                self.dst_store.delete(self.into + rel)
            else:
                puts.pop(self.into + rel, None)
                puts[self.into + rel] = e.kv.value
        self._flush(puts)
        if copied:
            self.trace.append((arrived, time.time(), copied))
            if self.trace_to is not None:
                with self.trace_to.open("a") as f:
                    f.write(f"{arrived:.4f} {self.trace[-1][1]:.4f} {copied}\n")

    def _flush(self, puts: dict[str, bytes]) -> None:
        self.dst_store.put_many(list(puts.items()))
        puts.clear()

    def _status(self) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rec = {"cluster": self.src, "state": "connected", "connected": True, "lastSync": now}
        self.dst_store.put_json(self.into + "status", rec)

    def close(self) -> None:
        self.stop.set()


class MirrorProcess:
    """A ``Mirror`` in a child process of its own, in the router namespace, talking to
    both etcds directly — as the real syncer is a process of its own on the cluster's
    control plane. The in-thread ``Mirror`` shares the bench's interpreter (the GIL)
    with the writer and reaches each etcd through the test's forwarder threads: under
    load every batch waits for those threads to be scheduled. Same contract, same
    class; ``trace`` is read back from the child's trace file."""

    def __init__(self, lab: MeshSvcLab, src: str, dst: str) -> None:
        self.src, self.dst = src, dst
        self.trace_file = lab.tmp / f"mirror-{src}-{dst}.trace"
        self.trace_file.write_text("")
        urls = ETCD_URL
        argv = ["nsenter", f"--net=/run/netns/{lab.fab}", PYTHON, "-m",
                "harness.testlab.meshsvclab", "mirror", src, urls[src], dst, urls[dst],
                str(self.trace_file)]  # fmt: skip
        log = open(lab.tmp / f"mirror-{src}-{dst}.log", "ab")  # noqa: SIM115 (the child's)
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(PROJECT))

    def start(self) -> None:
        """Started by the constructor (the same interface as ``Mirror``)."""

    @property
    def trace(self) -> list[tuple[float, float, int]]:
        out = []
        for line in self.trace_file.read_text().splitlines():
            a, w, n = line.split()
            out.append((float(a), float(w), int(n)))
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _stop(proc: subprocess.Popen[bytes] | None, kill: bool = False) -> None:
    """Stop a child by its pid (SIGTERM, or SIGKILL) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class ExportEtcd:
    """A cluster's export etcd as the deploy's mesh role runs it (playbooks/roles/mesh,
    mesh-etcd.yml.j2): https on the control-plane node's underlay address and
    127.0.0.1, port 32379, client certificates of the mesh CA required, the JSON
    gateway on, periodic compaction; its data under the lab's temp directory."""

    def __init__(self, lab: MeshSvcLab, cluster: str, node: Node, certs: meshpki.ClusterCerts):
        self.cluster, self.node, self.certs = cluster, node, certs
        self.url = f"https://{node.ip}:{MESH_EXPORT_PORT}"
        self.log = lab.tmp / f"export-etcd-{cluster}.log"
        self.data = lab.tmp / f"export-etcd-{cluster}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["nsenter", f"--net=/run/netns/{self.node.ns}", "etcd",
                "--config-file", str(self._config())]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(f"export etcd of {self.cluster}", self._answers, timeout=60)

    def _config(self) -> Path:
        """The mesh role's own mesh-etcd.yml.j2 rendered for this lab, so the bench runs
        the settings a deploy runs rather than a copy of them (the role puts the server
        pair and the CA in one directory: here, links to meshpki's files)."""
        import jinja2

        from harness.deploy.deploy import source_root

        files = self.data.with_name(self.data.name + ".d")
        files.mkdir(parents=True, exist_ok=True)
        crt, key = self.certs.server
        for name, src in (("server.crt", crt), ("server.key", key), ("ca.crt", self.certs.ca)):
            (files / name).unlink(missing_ok=True)
            (files / name).symlink_to(src)
        template = source_root() / "playbooks/roles/mesh/templates/mesh-etcd.yml.j2"
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        config = files / "mesh-etcd.yml"
        config.write_text(env.from_string(template.read_text()).render(
            podlab_cluster=self.cluster, podlab_lab="meshsvclab",
            podlab_underlay_address=self.node.ip, mesh_etcd_data_dir=str(self.data),
            mesh_etcd_client_port=MESH_EXPORT_PORT,
            mesh_etcd_peer_port=MESH_EXPORT_PORT + 1, mesh_dir=str(files),
        ))  # fmt: skip
        return config

    def _answers(self) -> bool:
        crt, key = self.certs.admin
        argv = ["nsenter", f"--net=/run/netns/{self.node.ns}", "etcdctl",
                f"--endpoints={self.url}", f"--cacert={self.certs.ca}", f"--cert={crt}",
                f"--key={key}", "--dial-timeout=1s", "endpoint", "health"]  # fmt: skip
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def close(self) -> None:
        _stop(self.proc, kill=True)


class SyncerProcess:
    """Cluster ``cluster``'s real ``podlab-mesh`` (``python -m harness.mesh.syncer``) in
    its control-plane node's namespace, with ``trace: true``: it exports its cluster
    to its export etcd and mirrors every peer's export etcd (read over TLS with its
    client certificate, CN ``remote-<cluster>``) into its cluster's etcd. Its
    ``export trace`` and ``import trace`` log lines are the per-hop figures."""

    def __init__(self, lab: MeshSvcLab, cluster: str, peers: dict[str, ExportEtcd]) -> None:
        self.src = cluster
        own = peers[cluster]
        base = lab.tmp / f"syncer-{cluster}"
        remotes = base / "remotes"
        remotes.mkdir(parents=True, exist_ok=True)
        for f in remotes.glob("*.yaml"):
            f.unlink()
        for name, peer in peers.items():
            if name != cluster:
                (remotes / f"{name}.yaml").write_text(yaml.safe_dump({"endpoints": [peer.url]}))
        certs = own.certs
        cfg = {
            "cluster": cluster, "cluster_id": 1 if cluster == "t1" else 2, "mesh": MESH,
            "pod_cidr": CLUSTERS[cluster], "service_cidr": "10.96.0.0/16", "mode": lab.mode,
            "etcd_endpoints": [ETCD_URL[cluster]], "export_endpoint": own.url,
            "export_tls": {"ca": str(certs.ca), "cert": str(certs.admin[0]),
                           "key": str(certs.admin[1])},
            "password_file": str(certs.password),
            "peer_tls": {"ca": str(certs.ca), "cert": str(certs.client[0]),
                         "key": str(certs.client[1])},
            "remotes_dir": str(remotes), "etcdctl": shutil.which("etcdctl") or "etcdctl",
            "trace": True,
        }  # fmt: skip
        (base / "mesh.yaml").write_text(yaml.safe_dump(cfg))
        self.log = base / "podlab-mesh.log"
        argv = ["nsenter", f"--net=/run/netns/{own.node.ns}", PYTHON, "-m",
                "harness.mesh.syncer", "--config", str(base / "mesh.yaml")]  # fmt: skip
        self.pos = self.log.stat().st_size if self.log.exists() else 0  # this run's lines
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(PROJECT)
            )

    def start(self) -> None:
        """Started by the constructor (the same interface as ``Mirror``)."""

    def traces(self, kind: str) -> list[tuple[float, float, int]]:
        """This run's ``export`` or ``import`` trace lines: (arrived, written, keys)."""
        with self.log.open("rb") as f:
            f.seek(self.pos)
            text = f.read().decode(errors="replace")
        return [
            (float(a), float(w), int(n)) for k, a, w, n in TRACE_LINE.findall(text) if k == kind
        ]

    @property
    def trace(self) -> list[tuple[float, float, int]]:
        return self.traces("export")

    def close(self) -> None:
        """SIGTERM: the syncer stops its links and leaves every mirrored key in place."""
        _stop(self.proc)


class MeshSvcLab(AgentLab):
    """``MeshSvcLab(t1_nodes, t2_nodes)``; always ``close()``. Agents run host-gw."""

    def __init__(self, t1_nodes: int = 2, t2_nodes: int = 1, **cfg: Any) -> None:
        self.t2_etcd: subprocess.Popen[bytes] | None = None
        self.mirrors: list[Mirror | MirrorProcess | SyncerProcess] = []
        self.exports: dict[str, ExportEtcd] = {}  # started by the first syncer kind
        self._socks: list[socket.socket] = []
        super().__init__(t1_nodes, "host-gw", **cfg)
        try:
            for i in range(11, 11 + t2_nodes):
                self.add_node(
                    i, segment="edge", cluster="t2", cluster_id=2, pod_cidr=CLUSTERS["t2"],
                    etcd_endpoints=[f"http://{EDGE_GW}:2379"], **cfg,
                )  # fmt: skip
            for cluster in CLUSTERS:  # each cluster's first node is its control plane
                self.set_cfg(self.nodes_of(cluster)[0], role="control-plane")
            self.start_etcd("t2")
            sock, port = forward(self.fab, EDGE_GW, 2379)
            self._socks.append(sock)
            self.stores = {"t1": self.store, "t2": Store([f"http://127.0.0.1:{port}"])}
            wait_for("t2 etcd", lambda: self.stores["t2"].get_prefix("/") is not None, 60)
        except BaseException:
            self.close()
            raise

    # -- clusters ----------------------------------------------------------------------
    def cluster(self, node: Node) -> str:
        return str(node.cfg["cluster"])

    def nodes_of(self, cluster: str) -> list[Node]:
        return [n for n in self.nodes if self.cluster(n) == cluster]

    def set_cfg(self, node: Node, **cfg: Any) -> None:
        """Change a node's agent.yaml (before its agent starts, or restart it)."""
        node.cfg.update(cfg)
        (node.dir / "agent.yaml").write_text(yaml.safe_dump(node.cfg))

    def start_etcd(self, cluster: str) -> None:
        """(Re)start t2's etcd on its data directory (t1's is agentlab's own)."""
        assert cluster == "t2", "only t2's etcd is stopped and started here"
        url, peer = f"http://{EDGE_GW}:2379", "http://127.0.0.1:2382"
        log = open(self.tmp / "etcd-t2.log", "ab")  # noqa: SIM115 (kept open for the child)
        argv = ["nsenter", f"--net=/run/netns/{self.fab}", "etcd", "--name", "t2",
                "--data-dir", str(self.tmp / "etcd-t2"), "--listen-client-urls", url,
                "--advertise-client-urls", url, "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"t2={peer}"]  # fmt: skip
        self.t2_etcd = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def stop_etcd(self, cluster: str) -> None:
        assert cluster == "t2"
        if self.t2_etcd is not None and self.t2_etcd.poll() is None:
            self.t2_etcd.kill()
            self.t2_etcd.wait(timeout=60)
        self.t2_etcd = None

    def start_mesh(self, mirror: str = "process") -> None:
        """Agents of both clusters, their pod routes through the router, the mirrors
        (``mirror``: "process", each a child process as a syncer is, or "thread", in
        this process)."""
        for n in self.nodes:
            self.start_agent(n)
        records = {c: self.wait_records(c) for c in CLUSTERS}
        self._routes(records)
        self.start_mirrors(mirror)

    def start_mirrors(self, how: str) -> None:
        """(Re)start both mirrors as child processes ("process"), threads ("thread") or
        the real syncers ("syncer"); the mirrored keys stay meanwhile, and a new
        mirror's listing reconciles them. Returns once both directions say connected."""
        if how not in ("process", "thread", "syncer"):
            raise ValueError(f"unknown mirror kind {how!r} (process, thread or syncer)")
        for old in self.mirrors:
            old.close()
        if any(isinstance(old, Mirror) for old in self.mirrors):
            time.sleep(1.0)  # a stopped thread mirror's watch notices its stop flag
        self.mirrors = []
        for a, b in (("t1", "t2"), ("t2", "t1")):
            self.stores[b].delete(f"{cluster_prefix(b)}mesh/{a}/status")
        if how == "syncer":
            self._start_exports()
            self.mirrors = [SyncerProcess(self, c, self.exports) for c in CLUSTERS]
        else:
            for a, b in (("t1", "t2"), ("t2", "t1")):
                if how == "process":
                    m: Mirror | MirrorProcess = MirrorProcess(self, a, b)
                else:
                    m = Mirror(a, self.stores[a], b, self.stores[b])
                m.start()
                self.mirrors.append(m)
        for a, b in (("t1", "t2"), ("t2", "t1")):
            self._wait_connected(b, f"{cluster_prefix(b)}mesh/{a}/status", f"{a} into {b}")

    def _start_exports(self) -> None:
        """Both export etcds, once, with a per-mesh CA and certificates made by the
        deploy's code (``harness.deploy.meshpki``)."""
        if self.exports:
            return
        pki = self.tmp / "mesh" / MESH
        meshpki.ensure_ca(pki, MESH)
        for c in CLUSTERS:
            node = self.nodes_of(c)[0]  # the control plane, where the deploy puts it
            export = ExportEtcd(self, c, node, meshpki.ensure_cluster(pki, c, [node.ip]))
            self.exports[c] = export
            export.start()

    def _wait_connected(self, cluster: str, key: str, what: str) -> None:
        def connected() -> bool:
            kv = self.stores[cluster].get(key)
            return kv is not None and bool(kv.json().get("connected"))

        wait_for(f"{what} connected", connected, timeout=120)

    def wait_records(self, cluster: str, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        names = {n.name for n in self.nodes_of(cluster)}

        def all_there() -> dict[str, dict[str, Any]] | None:
            kvs, _ = self.stores[cluster].get_prefix(f"{cluster_prefix(cluster)}nodes/")
            got = {kv.key.rsplit("/", 1)[-1]: kv.json() for kv in kvs}
            return got if names <= set(got) else None

        return dict(wait_for(f"node records of {cluster}", all_there, timeout))

    def _routes(self, records: dict[str, dict[str, dict[str, Any]]]) -> None:
        with IPRoute(netns=self.fab) as fab:
            for recs in records.values():
                for rec in recs.values():
                    net, plen = rec["podCIDR"].split("/")
                    fab.route("replace", dst=net, dst_len=int(plen), gateway=rec["underlayIP"])
        for n in self.nodes:
            other = "t2" if self.cluster(n) == "t1" else "t1"
            net, plen = CLUSTERS[other].split("/")
            gw = ETCD_IP if self.cluster(n) == "t1" else EDGE_GW
            with IPRoute(netns=n.ns) as ipr:
                ipr.route("replace", dst=net, dst_len=int(plen), gateway=gw)

    # -- faults ------------------------------------------------------------------------
    def cut(self) -> None:
        """The link between the clusters goes down: nothing is forwarded between them
        (t1's side of the router is ``fab-e``, t2's ``br1``)."""
        doc = (
            f"add table inet {CUT_TABLE}\n"
            f"add chain inet {CUT_TABLE} cut {{ type filter hook forward priority -300 ; }}\n"
            f'add rule inet {CUT_TABLE} cut iifname "fab-e" oifname "br1" drop\n'
            f'add rule inet {CUT_TABLE} cut iifname "br1" oifname "fab-e" drop\n'
        )
        run(["nft", "-f", "-"], netns=self.fab, input=doc)

    def heal(self) -> None:
        run(["nft", "delete", "table", "inet", CUT_TABLE], netns=self.fab, check=False)

    # -- objects -----------------------------------------------------------------------
    def put(self, cluster: str, rel: str, obj: dict[str, Any]) -> None:
        self.stores[cluster].put(cluster_prefix(cluster) + rel, json.dumps(obj))

    def delete(self, cluster: str, rel: str) -> None:
        self.stores[cluster].delete(cluster_prefix(cluster) + rel)

    def pod(self, cluster: str, name: str, node: Node, command: list[str], **extra: Any) -> None:
        """A pod object exactly as ``podlab apply`` stores it."""
        container: dict[str, Any] = {"name": "c", "command": command, **extra.pop("container", {})}
        obj = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}-{time.time()}",
                         "labels": extra.pop("labels", {})},
            "spec": {"nodeName": node.name, "containers": [container], **extra},
        }  # fmt: skip
        self.stores[cluster].put(pod_key(cluster, "default", name), json.dumps(obj))

    def status(self, cluster: str, name: str) -> dict[str, Any] | None:
        kv = self.stores[cluster].get(podstatus_key(cluster, "default", name))
        return dict(kv.json()) if kv else None

    def ready(self, cluster: str, name: str) -> bool:
        st = self.status(cluster, name) or {}
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in st.get("conditions", []))  # fmt: skip

    def close(self) -> None:
        for m in self.mirrors:
            m.close()
        for e in self.exports.values():
            e.close()
        with contextlib.suppress(Exception):
            self.heal()
        for s in self._socks:
            s.close()
        with contextlib.suppress(Exception):
            self.stop_etcd("t2")
        super().close()


def main(argv: list[str]) -> int:
    """``python -m harness.testlab.meshsvclab mirror SRC SRC_URL DST DST_URL TRACE``:
    one ``Mirror`` until SIGTERM or SIGINT (MirrorProcess's child; it keeps nothing that
    an abrupt end could leave half done: the next mirror's listing reconciles)."""
    if len(argv) != 6 or argv[0] != "mirror":
        print("usage: python -m harness.testlab.meshsvclab mirror SRC SRC_URL DST DST_URL TRACE")
        return 2
    _, src, src_url, dst, dst_url, trace = argv
    m = Mirror(src, Store([src_url]), dst, Store([dst_url]), trace_to=Path(trace))
    m.start()
    while m.thread.is_alive():
        m.thread.join(timeout=1.0)
    return 1  # the watch never returns unless stopped


__all__ = ["EDGE", "NET", "ExportEtcd", "MeshSvcLab", "Mirror", "MirrorProcess", "SyncerProcess"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
