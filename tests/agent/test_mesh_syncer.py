"""The mesh syncer against real etcds (no lab): export, TLS + RBAC, mirroring,
outage and re-list, join-time refusals (overlapping pod CIDR, unknown CA).

One module-scoped mesh of c1 and c2 (four etcds, two syncers in this process);
the refusal tests add a third cluster each.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.mesh import keys
from harness.testlab.meshlab import MeshLab
from harness.testlab.meshsvclab import TRACE_LINE
from harness.testlab.wait import wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("etcd") is None or shutil.which("etcdctl") is None, reason="needs etcd, etcdctl"
)


@pytest.fixture(scope="module")
def mesh() -> Iterator[MeshLab]:
    root = Path(tempfile.mkdtemp(prefix="podlab-t-mesh-", dir="/dev/shm"))
    lab = MeshLab(root)
    try:
        lab.add("c1", 1, "10.244.0.0/16", trace=True)
        lab.add("c2", 2, "10.245.0.0/16", trace=True)
        lab.join("c1", "c2")
        for c in lab.clusters.values():
            c.start_syncer()
        yield lab
    finally:
        lab.close()
        shutil.rmtree(root, ignore_errors=True)


def status(lab: MeshLab, local: str, remote: str) -> dict[str, Any]:
    kv = lab.clusters[local].store.get(keys.status_key(local, remote))
    return json.loads(kv.value) if kv else {}


def mirrored(lab: MeshLab, local: str, remote: str, rel: str) -> bytes | None:
    kv = lab.clusters[local].store.get(keys.mirror_key(local, remote, rel))
    return kv.value if kv else None


def put(lab: MeshLab, cluster: str, rel: str, obj: Any) -> None:
    lab.clusters[cluster].store.put(f"/podlab/v1/{cluster}/{rel}", json.dumps(obj))


def wait_connected(lab: MeshLab, a: str, b: str, timeout: float = 30) -> None:
    wait_for(f"{a} sees {b} connected", lambda: status(lab, a, b).get("connected"), timeout)


def test_mirror_both_ways_and_only_exported_keys(mesh: MeshLab) -> None:
    wait_connected(mesh, "c1", "c2")
    wait_connected(mesh, "c2", "c1")
    put(mesh, "c2", "nodes/c2-w1", {"name": "c2-w1", "underlayIP": "10.100.2.3"})
    pod = {"metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}}}
    put(mesh, "c2", "pods/default/web-0", pod)
    ready = {"podIP": "10.245.1.2", "conditions": [{"type": "Ready", "status": "True"}]}
    put(mesh, "c2", "podstatus/default/web-0", ready)
    put(mesh, "c2", "services/default/web", {"spec": {"selector": {"app": "web"}}})
    put(mesh, "c2", "policies/default/deny", {"spec": {}})
    put(mesh, "c2", "serviceips/10.96.0.5", "default/web")
    wait_for(
        "c2's service mirrored in c1",
        lambda: mirrored(mesh, "c1", "c2", "services/default/web") is not None,
        timeout=10,
    )
    assert json.loads(mirrored(mesh, "c1", "c2", "podstatus/default/web-0") or b"{}") == ready
    assert mirrored(mesh, "c1", "c2", "policies/default/deny") is None  # policies stay home
    assert mirrored(mesh, "c1", "c2", "serviceips/10.96.0.5") is None
    info = json.loads(mirrored(mesh, "c1", "c2", "clusterinfo") or b"{}")
    assert (info["name"], info["id"], info["podCIDR"]) == ("c2", 2, "10.245.0.0/16")
    # nothing of c1's mirror of c2 goes back to c2 (no transitive mesh)
    kvs, _ = mesh.clusters["c2"].store.get_prefix(keys.remote_prefix("c2", "c1"))
    assert not [kv.key for kv in kvs if "/mesh/c1/mesh/" in kv.key]
    wait_for(
        "c1's status counts c2's endpoint",
        lambda: status(mesh, "c1", "c2").get("counts", {}).get("endpoints") == 1,
        timeout=10,
    )
    st = status(mesh, "c1", "c2")
    assert st["counts"]["nodes"] == 1 and st["counts"]["services"] == 1
    assert st["state"] == "connected" and st["lastError"] is None


def test_changes_and_deletes_propagate(mesh: MeshLab) -> None:
    wait_connected(mesh, "c1", "c2")
    t0 = time.monotonic()
    put(mesh, "c2", "nodes/c2-w9", {"name": "c2-w9"})
    wait_for(
        "new node mirrored",
        lambda: mirrored(mesh, "c1", "c2", "nodes/c2-w9") is not None,
        timeout=10,
        every=0.01,
    )
    print(f"c2 put -> c1 mirror: {time.monotonic() - t0:.3f} s")
    mesh.clusters["c2"].store.delete("/podlab/v1/c2/nodes/c2-w9")
    wait_for(
        "deleted node gone from the mirror",
        lambda: mirrored(mesh, "c1", "c2", "nodes/c2-w9") is None,
        timeout=10,
    )


def test_trace_times_the_export_and_the_import_hop(
    mesh: MeshLab, caplog: pytest.LogCaptureFixture
) -> None:
    """``trace: true``: one line per copied batch at each hop, in the form bench_mesh.py
    parses (its cross-cluster per-hop figures through the real syncers)."""
    caplog.set_level(logging.INFO, logger="podlab.mesh")
    wait_connected(mesh, "c1", "c2")
    before = time.time()
    put(mesh, "c2", "nodes/c2-w8", {"name": "c2-w8"})
    put(mesh, "c2", "policies/default/p8", {"spec": {}})  # not exported: no hop copies it
    wait_for("node mirrored", lambda: mirrored(mesh, "c1", "c2", "nodes/c2-w8") is not None, 10)
    mesh.clusters["c2"].store.delete("/podlab/v1/c2/nodes/c2-w8")
    hops = {}
    for msg in caplog.messages:
        m = TRACE_LINE.search(msg)
        if m and float(m.group(2)) >= before:
            hops.setdefault(m.group(1), (float(m.group(2)), float(m.group(3)), int(m.group(4))))
    assert set(hops) == {"export", "import"}, caplog.messages
    (e_in, e_out, e_n), (i_in, i_out, i_n) = hops["export"], hops["import"]
    # the peer's watch can deliver before the exporter's write call has returned
    assert before <= e_in <= e_out and e_in <= i_in <= i_out
    assert e_n == i_n == 1  # the node alone: the policy is neither exported nor imported


def _etcdctl(cluster: Any, reader: Any, *args: str) -> subprocess.CompletedProcess[str]:
    crt, key = reader.certs.client
    return subprocess.run(
        [
            *("etcdctl", f"--endpoints={cluster.export.url}", f"--cacert={reader.certs.ca}"),
            *(f"--cert={crt}", f"--key={key}", "--dial-timeout=2s", *args),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_peers_read_only_over_tls(mesh: MeshLab) -> None:
    wait_connected(mesh, "c1", "c2")
    c1, c2 = mesh.clusters["c1"], mesh.clusters["c2"]
    ok = _etcdctl(c2, c1, "get", "--prefix", "/podlab/v1/c2/nodes/", "--keys-only")
    assert ok.returncode == 0 and "/podlab/v1/c2/nodes/c2-w1" in ok.stdout, ok.stderr
    # the peer's user (remote-c1, from its certificate) may not write
    denied = _etcdctl(c2, c1, "put", "/podlab/v1/c2/nodes/evil", "x")
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    # negative control: the cluster's own syncer (root) can write there
    assert mesh.clusters["c2"].syncer is not None
    mesh.clusters["c2"].syncer.export.put("/podlab/v1/c2/probe", "x")
    mesh.clusters["c2"].syncer.export.delete("/podlab/v1/c2/probe")
    # and nothing outside the cluster's prefix is readable to a peer
    outside = _etcdctl(c2, c1, "get", "/podlab/v1/other")
    assert outside.returncode != 0 and "permission denied" in outside.stderr
    # without a client certificate TLS itself refuses
    plain = subprocess.run(
        [
            *("etcdctl", f"--endpoints={c2.export.url}", f"--cacert={c1.certs.ca}"),
            *("--dial-timeout=2s", "--command-timeout=3s", "get", "/podlab/v1/c2/clusterinfo"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode != 0


def test_outage_keeps_everything_and_relist_removes_only_the_vanished(mesh: MeshLab) -> None:
    wait_connected(mesh, "c1", "c2")
    c2 = mesh.clusters["c2"]
    put(mesh, "c2", "nodes/keep", {"name": "keep"})
    put(mesh, "c2", "nodes/vanish", {"name": "vanish"})
    wait_for(
        "both mirrored",
        lambda: mirrored(mesh, "c1", "c2", "nodes/vanish") is not None,
        timeout=10,
    )
    before, _ = mesh.clusters["c1"].store.get_prefix(keys.remote_prefix("c1", "c2") + "nodes/")
    c2.export.stop()  # the peer's control plane is gone (its export etcd)
    t0 = time.monotonic()
    wait_for("c2 disconnected", lambda: status(mesh, "c1", "c2").get("state") == "disconnected")
    detect = time.monotonic() - t0
    print(f"outage detected after {detect:.1f} s")
    assert detect < 15  # 3 s without heartbeat, on a shared machine (the bench measures it)
    after, _ = mesh.clusters["c1"].store.get_prefix(keys.remote_prefix("c1", "c2") + "nodes/")
    assert [kv.key for kv in after] == [kv.key for kv in before]  # nothing removed
    c2.store.delete("/podlab/v1/c2/nodes/vanish")  # deleted while c1 cannot see it
    time.sleep(1.0)
    c2.export.start()
    wait_connected(mesh, "c1", "c2")
    wait_for(
        "the vanished key is removed at re-list",
        lambda: mirrored(mesh, "c1", "c2", "nodes/vanish") is None,
        timeout=15,
    )
    assert mirrored(mesh, "c1", "c2", "nodes/keep") is not None


def test_cluster_etcd_restart_replays_no_history_into_the_export(mesh: MeshLab) -> None:
    """Scenario 26's etcd outage without a lab: c2's own etcd restarts, and neither its
    export nor c1's mirror may see an old state of a key that did not change. The
    exporter's watch of c2's etcd used to resume from where it began (its first
    listing), so the restart replayed c2's whole history into the export — a deleted
    Service, NotReady pods — and c1's agents failed over to their local backends."""
    wait_connected(mesh, "c1", "c2")
    c1, c2 = mesh.clusters["c1"], mesh.clusters["c2"]
    svc = "services/default/flap"
    put(mesh, "c2", svc, {"v": 1})  # a history with a deletion, as each test run leaves
    c2.store.delete(f"/podlab/v1/c2/{svc}")
    put(mesh, "c2", svc, {"v": 2})
    wait_for("v2 mirrored", lambda: mirrored(mesh, "c1", "c2", svc) == b'{"v": 2}', 10)
    assert c2.syncer is not None
    seen: dict[str, list[tuple[str, bytes]]] = {"export": [], "mirror": []}
    stop = threading.Event()
    for name, store, prefix in (
        ("export", c2.syncer.export, f"/podlab/v1/c2/{svc}"),
        ("mirror", c1.store, keys.mirror_key("c1", "c2", svc)),
    ):
        rev = store.get_prefix(prefix)[1]
        threading.Thread(
            target=store.watch_prefix,
            args=(prefix, lambda ev, n=name: seen[n].extend((e.type, e.kv.value) for e in ev),
                  lambda _kvs: None, stop),
            kwargs={"start_revision": rev + 1},
            daemon=True,
        ).start()  # fmt: skip
    since = status(mesh, "c1", "c2").get("since")
    try:
        c2.etcd.stop()
        wait_for("c2 disconnected", lambda: status(mesh, "c1", "c2").get("state") == "disconnected")
        c2.etcd.start()
        wait_for(
            "c1 connected to c2 again",
            lambda: (st := status(mesh, "c1", "c2")).get("connected") and st["since"] != since,
            30,
        )
        time.sleep(2.0)  # a replay (the exporter's watch resuming) would land by now
    finally:
        stop.set()
    assert seen == {"export": [], "mirror": []}, f"history replayed after the restart: {seen}"
    assert mirrored(mesh, "c1", "c2", svc) == b'{"v": 2}'


def test_overlapping_pod_cidr_is_refused_at_join(mesh: MeshLab) -> None:
    bad = mesh.add("c3", 3, "10.245.128.0/17")  # inside c2's pod CIDR
    try:
        mesh.join("c1", "c3")
        bad.start_syncer()
        wait_for("c3 refused", lambda: status(mesh, "c1", "c3").get("state") == "refused")
        err = status(mesh, "c1", "c3")["lastError"]
        assert "c3 pod CIDR 10.245.128.0/17 overlaps cluster c2" in err and "fix:" in err
        kvs, _ = mesh.clusters["c1"].store.get_prefix(keys.remote_prefix("c1", "c3"))
        assert [kv.key for kv in kvs] == [keys.status_key("c1", "c3")]  # nothing mirrored
        # c2 and c1 stay connected
        assert status(mesh, "c1", "c2")["state"] == "connected"
    finally:
        (mesh.clusters["c1"].cfg.remotes_dir / "c3.yaml").unlink(missing_ok=True)
        bad.close()
        del mesh.clusters["c3"]
    wait_for(
        "c3's status removed with its configuration",
        lambda: not status(mesh, "c1", "c3"),
        timeout=10,
    )


def test_unknown_ca_is_refused_and_nothing_connected(mesh: MeshLab) -> None:
    other_ca = mesh.root / "other-pki"
    stranger = mesh.add("c4", 4, "10.247.0.0/16", ca_dir=other_ca)
    try:
        mesh.list_remote("c1", "c4")
        wait_for("c4 refused", lambda: status(mesh, "c1", "c4").get("state") == "refused")
        err = status(mesh, "c1", "c4")["lastError"]
        assert "unknown CA" in err and "--mesh-ca" in err
        link = mesh.clusters["c1"].syncer.links["c4"][1]  # type: ignore[union-attr]
        assert link.watch is None  # nothing left connected
        kvs, _ = mesh.clusters["c1"].store.get_prefix(keys.remote_prefix("c1", "c4"))
        assert [kv.key for kv in kvs] == [keys.status_key("c1", "c4")]
    finally:
        (mesh.clusters["c1"].cfg.remotes_dir / "c4.yaml").unlink(missing_ok=True)
        stranger.close()
        del mesh.clusters["c4"]
