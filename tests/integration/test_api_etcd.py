"""apply / get / delete against a real etcd (started here on free loopback ports).

Runs the real ``podlab`` entry point in-process with ``--etcd``; what the agent
would write (node records, pod status) is written straight into etcd, in the
layout the agent uses.
"""

from __future__ import annotations

import io
import ipaddress
import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.errors import LabError
from harness.store import Store, Write
from harness.testlab.etcd import LocalEtcd, free_port

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd binary not installed")

CLUSTER = "c1"
PREFIX = f"/podlab/v1/{CLUSTER}/"


@pytest.fixture(scope="module")
def etcd_url() -> Iterator[str]:
    """A throwaway etcd on 127.0.0.1 (never 2379), stopped by pid afterwards."""
    with LocalEtcd() as etcd:
        yield etcd.url


@pytest.fixture
def kv(etcd_url: str) -> Iterator[Store]:
    store = Store([etcd_url])
    yield store
    store.delete_prefix("/podlab/")


def podlab(capsys: pytest.CaptureFixture[str], etcd_url: str, *argv: str) -> tuple[int, str, str]:
    rc = main([*argv, "--etcd", etcd_url, "--cluster", CLUSTER])
    out, err = capsys.readouterr()
    return rc, out, err


def add_node(kv: Store, name: str, age_s: float = 1.0, **extra: object) -> None:
    record = {
        "name": name,
        "underlayIP": "10.1.0.1",
        "podCIDR": "10.244.1.0/24",
        "mode": "vxlan",
        "heartbeat": time.time() - age_s,
        **extra,
    }
    assert kv.commit([Write(f"{PREFIX}nodes/{name}", json.dumps(record).encode())])


def pod_doc(name: str, ns: str = "default", node: str | None = None, **labels: str) -> dict:
    spec: dict = {
        "containers": [
            {
                "name": "c",
                "command": ["sleep", "infinity"],
                "ports": [{"name": "http", "containerPort": 8080}],
            }
        ]
    }
    if node:
        spec["nodeName"] = node
    meta = {"name": name, "namespace": ns, "labels": labels or {"app": name}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def manifest(tmp_path: Path, *docs: dict, name: str = "m.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def keys(kv: Store) -> list[str]:
    return [e.key for e in kv.get_prefix(PREFIX)[0]]


def test_apply_get_delete_round_trip(kv: Store, etcd_url: str, tmp_path: Path, capsys) -> None:
    add_node(kv, "c1-w1")
    add_node(kv, "c1-w2")
    docs = [pod_doc("web"), pod_doc("db", node="c1-w2"), pod_doc("cli", ns="test")]
    path = manifest(tmp_path, *docs)
    assert podlab(capsys, etcd_url, "apply", "-f", path)[:2] == (
        0,
        "pod/web created\npod/db created\npod/cli created\n",
    )

    rc, out, _ = podlab(capsys, etcd_url, "get", "pods", "-A", "-o", "json")
    listed = json.loads(out)
    assert rc == 0 and listed["kind"] == "List" and listed["apiVersion"] == "v1"
    by_name = {i["metadata"]["name"]: i for i in listed["items"]}
    assert sorted(by_name) == ["cli", "db", "web"]
    for doc in docs:
        got = by_name[doc["metadata"]["name"]]
        assert got["spec"]["containers"][0]["command"] == ["sleep", "infinity"]
        assert got["metadata"]["labels"] == doc["metadata"]["labels"]
        assert got["metadata"]["resourceVersion"].isdigit()
        assert len(got["metadata"]["uid"]) == 36
        assert got["status"] == {"phase": "Pending"}
    assert by_name["db"]["spec"]["nodeName"] == "c1-w2"
    # apply places nothing: the controller manager's scheduler binds unplaced pods
    assert "nodeName" not in by_name["web"]["spec"] and "nodeName" not in by_name["cli"]["spec"]

    rc, out, _ = podlab(capsys, etcd_url, "get", "pod", "web", "-o", "yaml")
    single = yaml.safe_load(out)
    assert rc == 0 and single["kind"] == "Pod" and single["metadata"]["name"] == "web"
    assert single["metadata"]["uid"] == by_name["web"]["metadata"]["uid"]

    # re-applying what `get -o yaml` printed changes nothing
    again = manifest(tmp_path, single, name="again.yaml")
    assert podlab(capsys, etcd_url, "apply", "-f", again)[:2] == (0, "pod/web unchanged\n")

    rc, out, _ = podlab(capsys, etcd_url, "delete", "pod", "web", "db")
    assert (rc, out) == (0, 'pod "web" deleted\npod "db" deleted\n')
    assert keys(kv) == [f"{PREFIX}nodes/c1-w1", f"{PREFIX}nodes/c1-w2", f"{PREFIX}pods/test/cli"]
    rc, _, err = podlab(capsys, etcd_url, "get", "pods")
    assert rc == 0 and err == "No resources found in default namespace.\n"


def test_reapply_keeps_identity_and_refuses_spec_changes(kv, etcd_url, tmp_path, capsys) -> None:
    path = manifest(tmp_path, pod_doc("web", node="c1-w1"))
    assert podlab(capsys, etcd_url, "apply", "-f", path)[:2] == (0, "pod/web created\n")
    before = kv.get(f"{PREFIX}pods/default/web")
    assert before is not None
    uid = json.loads(before.value)["metadata"]["uid"]

    relabeled = manifest(tmp_path, pod_doc("web", node="c1-w1", app="web", tier="front"))
    assert podlab(capsys, etcd_url, "apply", "-f", relabeled)[:2] == (0, "pod/web configured\n")
    after = kv.get(f"{PREFIX}pods/default/web")
    assert after is not None and after.mod_revision > before.mod_revision
    stored = json.loads(after.value)
    assert stored["metadata"]["uid"] == uid
    assert stored["metadata"]["labels"] == {"app": "web", "tier": "front"}

    changed = pod_doc("web", node="c1-w1", app="web", tier="front")
    changed["spec"]["containers"][0]["command"] = ["sleep", "5"]
    rc, out, err = podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, changed))
    assert (rc, out) == (2, "")
    assert "spec.containers[0].command[1]: a pod's spec cannot change once created" in err
    assert kv.get(f"{PREFIX}pods/default/web") == after


def test_bad_multi_document_file_writes_nothing(kv, etcd_url, tmp_path, capsys) -> None:
    add_node(kv, "c1-w1")
    bad = pod_doc("bad")
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = 0
    path = manifest(tmp_path, pod_doc("good-1"), bad, pod_doc("good-2"))
    rc, out, err = podlab(capsys, etcd_url, "apply", "-f", path)
    assert (rc, out) == (2, "")
    assert "m.yaml:" in err and "document 2 (pod/bad)" in err and "containerPort" in err
    assert keys(kv) == [f"{PREFIX}nodes/c1-w1"]


def test_unknown_node_is_refused_and_no_ready_node_leaves_a_pod_pending(
    kv, etcd_url, tmp_path, capsys
) -> None:
    add_node(kv, "c1-w1", age_s=600)  # registered but stale: NotReady
    rc, _, err = podlab(
        capsys, etcd_url, "apply", "-f", manifest(tmp_path, pod_doc("b", node="c1-w9"))
    )
    assert rc == 2 and "node 'c1-w9' is not in cluster c1 (fix: use one of: c1-w1)" in err
    assert keys(kv) == [f"{PREFIX}nodes/c1-w1"]
    # as in Kubernetes, a pod nothing can run yet is stored and waits (Pending)
    rc, out, _ = podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, pod_doc("a")))
    assert (rc, out) == (0, "pod/a created\n")
    assert keys(kv) == [f"{PREFIX}nodes/c1-w1", f"{PREFIX}pods/default/a"]
    rc, out, _ = podlab(capsys, etcd_url, "get", "nodes")
    assert rc == 0 and out.splitlines()[1].split()[:2] == ["c1-w1", "NotReady"]


def test_status_merge_table_and_stdin(kv, etcd_url, tmp_path, capsys, monkeypatch) -> None:
    add_node(kv, "c1-w1")
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(pod_doc("web", node="c1-w1"))))
    assert podlab(capsys, etcd_url, "apply", "-f", "-")[:2] == (0, "pod/web created\n")
    status = {
        "phase": "Running",
        "podIP": "10.244.1.7",
        "netns": "pod-web",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    assert kv.commit([Write(f"{PREFIX}podstatus/default/web", json.dumps(status).encode())])
    rc, out, _ = podlab(capsys, etcd_url, "get", "pods", "-o", "wide")
    assert rc == 0
    assert out.splitlines()[1].split() == [
        "web",
        "1/1",
        "Running",
        "0",
        out.splitlines()[1].split()[4],
        "10.244.1.7",
        "c1-w1",
    ]
    assert podlab(capsys, etcd_url, "get", "po", "-o", "name")[1] == "pod/web\n"
    rc, out, _ = podlab(capsys, etcd_url, "get", "pod/web", "-o", "json")
    assert json.loads(out)["status"]["podIP"] == "10.244.1.7"


def test_delete_wait_and_stale_status(kv, etcd_url, tmp_path, capsys) -> None:
    path = manifest(tmp_path, pod_doc("web", node="c1-w1"))
    assert podlab(capsys, etcd_url, "apply", "-f", path)[0] == 0
    status_key = f"{PREFIX}podstatus/default/web"
    assert kv.commit([Write(status_key, b'{"phase": "Running"}')])

    # Nobody removes the status: --wait gives up after its timeout, exit 1.
    rc, out, err = podlab(capsys, etcd_url, "delete", "-f", path, "--wait", "--timeout", "0.5")
    assert (rc, out) == (1, 'pod "web" deleted\n')
    assert "still has not torn down: default/web" in err

    # A second delete finds no pod and removes the orphaned status itself.
    rc, _, err = podlab(capsys, etcd_url, "delete", "pod", "web")
    assert rc == 1 and 'pods "web" not found in namespace default' in err
    assert kv.get(status_key) is None

    # With an agent removing the status shortly after the delete, --wait returns 0.
    assert podlab(capsys, etcd_url, "apply", "-f", path)[0] == 0
    assert kv.commit([Write(status_key, b'{"phase": "Running"}')])

    def agent() -> None:
        while kv.get(f"{PREFIX}pods/default/web") is not None:
            time.sleep(0.05)
        time.sleep(0.3)
        kv.delete(status_key)

    thread = threading.Thread(target=agent)
    thread.start()
    rc, out, _ = podlab(capsys, etcd_url, "delete", "pod", "web", "--wait", "--timeout", "10")
    thread.join()
    assert (rc, out) == (0, 'pod "web" deleted\n')


def test_guarded_commit_refuses_stale_revisions(kv) -> None:
    key = f"{PREFIX}pods/default/x"
    assert kv.commit([Write(key, b"1", 0)])
    first = kv.get(key)
    assert first is not None
    assert not kv.commit([Write(key, b"2", 0)])  # exists already
    assert kv.commit([Write(key, b"2", first.mod_revision)])
    # a stale revision fails the whole batch, including the other key
    assert not kv.commit([Write(key + "y", b"new", 0), Write(key, b"3", first.mod_revision)])
    assert kv.get(key + "y") is None
    entry = kv.get(key)
    assert entry is not None and entry.value == b"2"


def test_exec_refuses_pods_that_are_not_running(kv, etcd_url, tmp_path, capsys) -> None:
    from harness.api.client import ApiClient, NotFoundError
    from harness.api.exec import exec_in_pod

    client = ApiClient(kv, CLUSTER)
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    with pytest.raises(LabError, match="ssh_config is missing"):
        exec_in_pod(client, lab_dir, "default", "web", ["true"], 5)
    (lab_dir / "ssh_config").write_text("Host *\n")
    with pytest.raises(NotFoundError, match='pods "web" not found'):
        exec_in_pod(client, lab_dir, "default", "web", ["true"], 5)
    assert (
        podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, pod_doc("web", node="n")))[0]
        == 0
    )
    with pytest.raises(LabError, match="is not running \\(phase Pending\\)"):
        exec_in_pod(client, lab_dir, "default", "web", ["true"], 5)


@pytest.mark.root
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_real_agents_run_what_apply_wrote(tmp_path, capsys) -> None:
    """The etcd contract end to end: apply → agents run the pods → get → delete --wait."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root for namespaces")
    from harness.testlab.agentlab import AgentLab
    from harness.testlab.controllers import Controllers

    lab = AgentLab(2, "host-gw")
    ctl = Controllers(lab)  # its scheduler places the pods, as on a deployed cluster
    try:
        ctl.start()
        for n in lab.nodes:
            lab.start_agent(n)
        for n in lab.nodes:
            lab.wait_node(n)
        url, flags = lab.store.endpoints[0], ["--cluster", "t1"]
        docs = [pod_doc(f"p{i}") for i in range(3)]
        assert main(["apply", "-f", manifest(tmp_path, *docs), "--etcd", url, *flags]) == 0
        for i in range(3):
            lab.wait_running(f"p{i}")
        capsys.readouterr()
        assert main(["get", "pods", "-o", "json", "--etcd", url, *flags]) == 0
        items = json.loads(capsys.readouterr().out)["items"]
        assert [i["status"]["phase"] for i in items] == ["Running"] * 3
        spread = Counter(i["spec"]["nodeName"] for i in items)
        assert set(spread) == {"n1", "n2"} and sorted(spread.values()) == [1, 2], spread
        for item in items:  # each pod got an address from its node's leased subnet
            node = next(n for n in lab.nodes if n.name == item["spec"]["nodeName"])
            subnet = lab.wait_node(node)["podCIDR"]
            assert ipaddress.ip_address(item["status"]["podIP"]) in ipaddress.ip_network(subnet)
        assert main(["get", "nodes", "--etcd", url, *flags]) == 0
        rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()[1:]]
        assert rows == [["n1", "Ready"], ["n2", "Ready"]]
        argv = ["delete", "pod", "p0", "p1", "p2", "--wait", "--timeout", "30"]
        assert main([*argv, "--etcd", url, *flags]) == 0
        assert [k for k in keys_under(lab.store, "/podlab/v1/t1/pod")] == []
    finally:
        ctl.stop()
        lab.close()


def keys_under(store, prefix: str) -> list[str]:
    return [kv.key for kv in store.get_prefix(prefix)[0]]


def test_status_of_an_earlier_pod_with_the_same_name_is_ignored(kv, etcd_url, tmp_path, capsys):
    assert (
        podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, pod_doc("web", node="n")))[0]
        == 0
    )
    old = {"uid": "uid-of-a-deleted-pod", "phase": "Running", "podIP": "10.244.9.9"}
    assert kv.commit([Write(f"{PREFIX}podstatus/default/web", json.dumps(old).encode())])
    rc, out, _ = podlab(capsys, etcd_url, "get", "pod", "web", "-o", "json")
    assert rc == 0 and json.loads(out)["status"] == {"phase": "Pending"}


def test_unreachable_etcd_is_one_clear_error(capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["get", "pods", "--etcd", url, "--cluster", CLUSTER]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach etcd at {url}: connection refused" in err
    assert "Traceback" not in err
