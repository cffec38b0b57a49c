"""The API of the mesh against a real etcd: ServiceExports, federation, all-cluster listings.

Remote clusters' objects are written where the mesh syncer puts them
(``/podlab/v1/c1/mesh/c2/…``, the syncer's key contract); federation uses a
lab on disk made of nothing but its state file and an inventory naming two
clusters whose etcd is the same throwaway one (each cluster its own prefix).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.store import Store, Write
from tests.integration import test_api_etcd as base
from tests.integration.test_api_etcd import PREFIX, manifest, podlab

etcd_url = base.etcd_url
kv = base.kv
MCS = "multicluster.x-k8s.io/v1alpha1"
REMOTE = "/podlab/v1/c1/mesh/c2/"


def svc(name: str = "web", port: int = 80, **ann: str) -> dict:
    meta = {"name": name, "namespace": "default", "annotations": ann}
    spec = {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def export(name: str = "web") -> dict:
    return {"apiVersion": MCS, "kind": "ServiceExport", "metadata": {"name": name}}


def put(kv: Store, key: str, obj: dict) -> None:
    assert kv.commit([Write(key, json.dumps(obj).encode())])


def test_export_needs_its_service(kv: Store, etcd_url: str, tmp_path: Path, capsys) -> None:
    rc, out, err = podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, export()))
    assert rc == 2
    assert "serviceexport/web" in err and "there is no Service default/web in cluster c1" in err
    assert "apply the Service first, or in the same file" in err
    assert kv.get_prefix(PREFIX)[0] == [], "nothing may be written"
    rc, out, err = podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, svc(), export()))
    assert rc == 0, err
    assert out == "service/web created\nserviceexport/web created\n"
    valid = {"type": "Valid", "status": "True", "reason": "Valid"}
    conflict = {"type": "Conflict", "status": "False", "reason": "NoConflicts"}
    cond = {"conditions": [valid, conflict]}
    put(kv, f"{PREFIX}serviceexportstatus/default/web", cond)
    rc, out, _ = podlab(capsys, etcd_url, "get", "serviceexports")
    assert out.splitlines()[0].split() == ["NAME", "VALID", "CONFLICT", "AGE"]
    assert out.splitlines()[1].split()[:4] == ["web", "True", "False", "(NoConflicts)"]
    rc, out, _ = podlab(capsys, etcd_url, "get", "svcex", "web", "-o", "json")
    assert json.loads(out)["status"] == cond


def test_conflicting_export_is_refused_unless_allowed(
    kv: Store, etcd_url: str, tmp_path: Path, capsys
) -> None:
    put(kv, f"{REMOTE}services/default/web", svc(port=8080))
    older = {**export(), "metadata": {"name": "web", "namespace": "default",
                                      "creationTimestamp": "2026-01-01T00:00:00Z"}}  # fmt: skip
    put(kv, f"{REMOTE}serviceexports/default/web", older)
    path = manifest(tmp_path, svc(port=80), export(), name="conflict.yaml")
    rc, _, err = podlab(capsys, etcd_url, "apply", "-f", path)
    assert rc == 2
    assert 'port "http" is 8080/TCP in c2 but 80/TCP in c1' in err
    assert "cluster c2's, wins" in err and "--allow-conflict" in err
    assert kv.get_prefix(PREFIX + "services/")[0] == [], "nothing may be written"
    rc, _, err = podlab(
        capsys, etcd_url, "apply", "-f", manifest(tmp_path, svc(port=8080), export())
    )
    assert rc == 0, f"the same ports as c2 are no conflict: {err}"
    # the exported Service alone, changed later, is judged too (its export is stored)
    alone = manifest(tmp_path, svc(port=80), name="alone.yaml")
    rc, _, err = podlab(capsys, etcd_url, "apply", "-f", alone)
    assert rc == 2 and 'port "http" is 8080/TCP in c2 but 80/TCP in c1' in err
    # a Service nobody exports never conflicts (and skips reading the mesh's objects)
    other = manifest(tmp_path, svc(name="other", port=80), name="other.yaml")
    rc, _, err = podlab(capsys, etcd_url, "apply", "-f", other)
    assert rc == 0, err
    rc, out, err = podlab(capsys, etcd_url, "apply", "-f", path, "--allow-conflict")
    assert rc == 0 and "service/web configured" in out, err


def test_imports_are_listed_never_applied_or_deleted(
    kv: Store, etcd_url: str, tmp_path: Path, capsys
) -> None:
    imp = {"apiVersion": MCS, "kind": "ServiceImport",
           "metadata": {"name": "web", "namespace": "default"},
           "spec": {"type": "ClusterSetIP", "ips": ["10.96.255.254"],
                    "ports": [{"name": "http", "protocol": "TCP", "port": 80}]},
           "status": {"clusters": [{"cluster": "c2"}, {"cluster": "c1"}]}}  # fmt: skip
    put(kv, f"{PREFIX}serviceimports/default/web", imp)
    rc, out, _ = podlab(capsys, etcd_url, "get", "serviceimports")
    assert out.splitlines()[1].split() == [
        "web",
        "ClusterSetIP",
        "10.96.255.254",
        "80/TCP",
        "c2,c1",
    ]
    rc, _, err = podlab(capsys, etcd_url, "delete", "serviceimport", "web")
    assert rc == 2 and "delete the ServiceExports it comes from" in err
    assert kv.get(f"{PREFIX}serviceimports/default/web") is not None


@pytest.fixture
def lab_home(tmp_path: Path, etcd_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lab ``fed`` on disk: its state file and an inventory with clusters c1 and c2."""
    (tmp_path / ".podlab" / "fed").mkdir(parents=True)
    (tmp_path / ".podlab" / "fed" / "state.json").write_text("{}")
    inv = {"all": {"children": {
        "c1": {"vars": {"podlab_cluster": "c1", "podlab_etcd_client_endpoint": etcd_url,
                        "podlab_service_cidr": "10.96.0.0/16"}, "hosts": {"c1-cp": {}}},
        "c2": {"vars": {"podlab_cluster": "c2", "podlab_etcd_client_endpoint": etcd_url,
                        "podlab_service_cidr": "10.97.0.0/16"}, "hosts": {"c2-cp": {}}},
    }}}  # fmt: skip
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "fed.yml").write_text(yaml.safe_dump(inv))
    monkeypatch.setenv("PODLAB_HOME", str(tmp_path))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_federated_apply_writes_every_cluster_or_none(kv: Store, lab_home: Path, capsys) -> None:
    g = {"service.cilium.io/global": "true"}
    path = manifest(lab_home, svc(**g), export())
    rc, out, err = run(capsys, "apply", "-f", path, "--clusters", "c1,c2")
    assert rc == 0, err
    assert "service/web created (cluster c2)" in out
    ips = {c: json.loads(kv.get(f"/podlab/v1/{c}/services/default/web").value)["spec"]["clusterIP"]
           for c in ("c1", "c2")}  # fmt: skip
    assert ips["c1"].startswith("10.96.") and ips["c2"].startswith("10.97.")  # each its own CIDR
    # c1 accepts, c2 refuses (the pod names a node c2 does not have) → c1 gets nothing
    for c in ("c1", "c2"):
        put(kv, f"/podlab/v1/{c}/nodes/{c}-w1", {"name": f"{c}-w1", "heartbeat": 0})
    pinned = base.pod_doc("pinned", node="c1-w1")
    path2 = manifest(lab_home, svc(name="other"), pinned, name="pinned.yaml")
    rc, _, err = run(capsys, "apply", "-f", path2, "--clusters", "c1,c2")
    assert rc == 2
    assert "cluster c2, document 2 (pod/pinned)" in err and "not in cluster c2" in err
    assert "cluster c1" not in err, "c1 accepts it on its own"
    assert kv.get("/podlab/v1/c1/services/default/other") is None, "c1 was written anyway"
    assert kv.get("/podlab/v1/c1/pods/default/pinned") is None, "c1 was written anyway"
    rc, _, err = run(capsys, "apply", "-f", path, "--clusters", "c1,c3")
    assert rc == 2 and "unknown cluster c3" in err


def test_all_clusters_listing_names_each_backends_cluster(
    kv: Store, lab_home: Path, capsys
) -> None:
    g = {"service.cilium.io/global": "true"}
    path = manifest(lab_home, svc(**g))
    assert run(capsys, "apply", "-f", path, "--clusters", "c1,c2")[0] == 0
    for c, ip, where in (("c1", "10.244.1.5", "/podlab/v1/c1/"), ("c2", "10.245.1.5", REMOTE)):
        meta = {"name": f"web-{c}", "namespace": "default", "labels": {"app": "web"}}
        container = {"name": "c", "ports": [{"containerPort": 80}]}
        pod = {"metadata": meta, "spec": {"nodeName": f"{c}-w1", "containers": [container]}}
        put(kv, f"{where}pods/default/web-{c}", pod)
        st = {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
        put(kv, f"{where}podstatus/default/web-{c}", st)
    theirs = json.loads(kv.get("/podlab/v1/c2/services/default/web").value)
    put(kv, f"{REMOTE}services/default/web", theirs)  # as the syncer mirrors it into c1
    rc, out, err = run(capsys, "get", "services", "--all-clusters")
    assert rc == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "10.244.1.5:80 (c1), 10.245.1.5:80 (c2)" in lines["c1"]
    assert "global,affinity=none" in lines["c1"]
    rc, out, _ = run(capsys, "get", "services", "--all-clusters", "-o", "json")
    c1 = next(r for r in json.loads(out)["items"] if r["cluster"] == "c1")
    assert {"address": "10.245.1.5:80", "cluster": "c2"} in c1["backends"]
