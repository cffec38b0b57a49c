"""A mesh control plane without a lab: per cluster a plain etcd (the cluster's own),
a TLS export etcd and an in-process ``Syncer``, all on 127.0.0.1 with free ports.

Shared by tests/agent/test_mesh_syncer.py and bench/bench_mesh_control.py (so it lives
here, not in tests/).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.deploy import meshpki
from harness.mesh.config import MeshConfig, Tls
from harness.mesh.syncer import Syncer
from harness.store import Store
from harness.testlab.etcd import LocalEtcd, free_port
from harness.testlab.wait import wait_for


class TlsEtcd(LocalEtcd):
    """An export etcd: https, client certificates required (auth is set by the syncer)."""

    def __init__(self, certs: meshpki.ClusterCerts) -> None:
        super().__init__()
        self.mesh_certs = certs
        self.url = f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer}"
        crt, key = self.mesh_certs.server
        log = open(self.dir / "etcd.log", "ab")  # noqa: SIM115 (the child keeps it)
        argv = ["etcd", "--name", "x", "--data-dir", str(self.dir / "data")]
        argv += ["--listen-client-urls", self.url, "--advertise-client-urls", self.url]
        argv += ["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
        argv += ["--initial-cluster", f"x={peer}", "--cert-file", str(crt), "--key-file", str(key)]
        argv += ["--trusted-ca-file", str(self.mesh_certs.ca), "--client-cert-auth"]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for("export etcd", self._answers, timeout=60)
        except AssertionError as exc:  # say why: the log goes with the directory
            raise AssertionError(f"{exc}; etcd's log: {self.log()[-2000:]}") from exc

    def _answers(self) -> bool:
        crt, key = self.mesh_certs.client
        r = subprocess.run(
            [
                *("etcdctl", f"--endpoints={self.url}", f"--cacert={self.mesh_certs.ca}"),
                *(f"--cert={crt}", f"--key={key}", "--dial-timeout=1s", "endpoint", "health"),
            ],
            capture_output=True,
            check=False,
        )
        return r.returncode == 0


@dataclass
class MeshCluster:
    name: str
    cid: int
    pod_cidr: str
    etcd: LocalEtcd
    export: TlsEtcd
    certs: meshpki.ClusterCerts
    cfg: MeshConfig
    syncer: Syncer | None = None
    thread: threading.Thread | None = None
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store([self.etcd.url], timeout=2)

    def start_syncer(self) -> None:
        self.syncer = Syncer(self.cfg)
        self.syncer.start()
        self.thread = threading.Thread(target=self.syncer.run, daemon=True)
        self.thread.start()

    def stop_syncer(self) -> None:
        if self.syncer is not None:
            self.syncer.stop.set()
            if self.thread is not None:
                self.thread.join(timeout=10)
        self.syncer = None

    def close(self) -> None:
        self.stop_syncer()
        self.export.close()
        self.etcd.close()


class MeshLab:
    """Clusters made with ``add``; ``join(a, b)`` lists each in the other's remotes."""

    def __init__(self, root: Path, mesh: str = "m1") -> None:
        self.root = root
        self.mesh = mesh
        self.clusters: dict[str, MeshCluster] = {}

    def add(
        self,
        name: str,
        cid: int,
        pod_cidr: str,
        mode: str = "vxlan",
        ca_dir: Path | None = None,
        mesh: str | None = None,
        trace: bool = False,
    ) -> MeshCluster:
        """A cluster with its two etcds running (its syncer not yet started)."""
        mesh_dir = ca_dir or self.root / "pki"
        meshpki.ensure_ca(mesh_dir, self.mesh)
        certs = meshpki.ensure_cluster(mesh_dir, name, ["127.0.0.1"])
        etcd, export = LocalEtcd(), TlsEtcd(certs)
        try:
            etcd.start()
            export.start()
        except BaseException:  # e.g. a free port taken meanwhile: leave no etcd, no dir
            export.close()
            etcd.close()
            raise
        remotes = self.root / name / "remotes"
        remotes.mkdir(parents=True, exist_ok=True)
        cfg = MeshConfig.model_validate(
            {
                "cluster": name,
                "cluster_id": cid,
                "mesh": mesh or self.mesh,
                "pod_cidr": pod_cidr,
                "service_cidr": "10.96.0.0/16",
                "mode": mode,
                "etcd_endpoints": [etcd.url],
                "export_endpoint": export.url,
                "export_tls": Tls(ca=certs.ca, cert=certs.admin[0], key=certs.admin[1]),
                "password_file": certs.password,
                "peer_tls": Tls(ca=certs.ca, cert=certs.client[0], key=certs.client[1]),
                "remotes_dir": remotes,
                "etcdctl": shutil.which("etcdctl") or "etcdctl",
                "trace": trace,
            }
        )
        mc = MeshCluster(name, cid, pod_cidr, etcd, export, certs, cfg)
        self.clusters[name] = mc
        return mc

    def list_remote(self, local: str, remote: str) -> Path:
        """Write ``remote``'s file into ``local``'s remotes directory."""
        f = self.clusters[local].cfg.remotes_dir / f"{remote}.yaml"
        f.write_text(yaml.safe_dump({"endpoints": [self.clusters[remote].export.url]}))
        return f

    def join(self, a: str, b: str) -> None:
        self.list_remote(a, b)
        self.list_remote(b, a)

    def close(self) -> None:
        for c in self.clusters.values():
            c.stop_syncer()
        for c in self.clusters.values():
            c.close()


__all__ = ["MeshCluster", "MeshLab", "TlsEtcd", "free_port"]
