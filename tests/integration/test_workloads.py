"""Workloads end to end on real agents and a real controller manager (one shared lab).

Two nodes (host-gw) with their agents, etcd, and ``podlab-controllers`` in the
lab's fabric namespace; every step goes through the ``podlab`` CLI
(``--etcd``): Deployments roll out, spread and name their pods as Kubernetes
does; a rolling update keeps its fenceposts and has a history to undo; quota
refusals read as the apiserver's and stall a rollout that ``rollout status``
names at once; a controller manager killed mid-rollout is restarted and
finishes it; a pod over its memory limit is OOM-killed and restarted; the
autoscaler follows a CPU load and comes back down after its window.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import main
from harness.kube import apps, autoscaling
from harness.testlab.agentlab import AgentLab
from harness.testlab.controllers import Controllers
from harness.testlab.wait import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd binary not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
]
ECHO = [sys.executable, "-m", "harness.workloads.echo", "--http", "8080", "--tcp", "9090"]


class Lab:
    def __init__(self, lab: AgentLab, ctl: Controllers) -> None:
        self.lab, self.ctl = lab, ctl
        self.url = lab.store.endpoints[0]


@pytest.fixture(scope="module")
def wl() -> Iterator[Lab]:
    lab = AgentLab(2, "host-gw", capacity={"cpu": "2", "memory": "4Gi"})
    ctl = Controllers(lab, hpa_sync_period_s=2.0, hpa_cpu_initialization_period_s=0.0)
    try:
        for n in lab.nodes:
            lab.start_agent(n)
        for n in lab.nodes:
            lab.wait_node(n)
        ctl.start()
        yield Lab(lab, ctl)
    finally:
        print("----- controllers\n" + ctl.tail())
        ctl.stop()
        for n in lab.nodes:
            print(f"----- agent {n.name}\n{n.log.read_text()[-3000:]}")
        lab.close()


def podlab(capsys: pytest.CaptureFixture[str], wl: Lab, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([*argv, "--etcd", wl.url, "--cluster", "t1"])
    out, err = capsys.readouterr()
    return rc, out, err


def apply(capsys: pytest.CaptureFixture[str], wl: Lab, tmp: Path, *docs: dict[str, Any]) -> str:
    path = tmp / f"m{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    rc, out, err = podlab(capsys, wl, "apply", "-f", str(path))
    assert rc == 0, err
    return out


def deployment(name: str, replicas: int = 3, ns: str = "default", **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "web",
        "command": ECHO,
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"port": "http", "path": "/"}},
        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"},
                      "limits": {"cpu": "1", "memory": "128Mi"}},
    }  # fmt: skip
    container.update(spec.pop("container", {}))
    return apps.deployment_manifest(name, ns, replicas, container, **spec)


def get(wl: Lab, kind: str, name: str, ns: str = "default") -> dict[str, Any]:
    folder = {"deploy": "deployments", "rs": "replicasets", "hpa": "horizontalpodautoscalers"}[kind]
    status = {"deploy": "deploymentstatus", "rs": "replicasetstatus", "hpa": "hpastatus"}[kind]
    obj = wl.lab.store.get(f"/podlab/v1/t1/{folder}/{ns}/{name}")
    st = wl.lab.store.get(f"/podlab/v1/t1/{status}/{ns}/{name}")
    assert obj is not None, f"{kind}/{name} not found"
    return {**obj.json(), "status": st.json() if st else {}}


def pods(wl: Lab, app: str, ns: str = "default") -> list[dict[str, Any]]:
    out = []
    for kv in wl.lab.store.get_prefix(f"/podlab/v1/t1/pods/{ns}/")[0]:
        pod = kv.json()
        if pod["metadata"].get("labels", {}).get("app") == app:
            st = wl.lab.store.get(f"/podlab/v1/t1/podstatus/{ns}/{pod['metadata']['name']}")
            out.append({**pod, "status": st.json() if st else {}})
    return out


def rolled_out(
    capsys: pytest.CaptureFixture[str], wl: Lab, name: str, timeout: float = 90, ns: str = "default"
) -> str:
    rc, out, err = podlab(capsys, wl, "rollout", "status", f"deployment/{name}", "-n", ns,
                          "--timeout", str(timeout))  # fmt: skip
    assert rc == 0, f"{out}\n{err}"
    return out


def test_a_deployment_rolls_out_spread_and_named_as_kubernetes_does(wl, capsys, tmp_path) -> None:
    assert apply(capsys, wl, tmp_path, deployment("web")) == "deployment.apps/web created\n"
    out = rolled_out(capsys, wl, "web")
    assert out.strip().endswith('deployment "web" successfully rolled out')
    d = get(wl, "deploy", "web")
    assert (d["status"]["availableReplicas"], d["status"]["updatedReplicas"]) == (3, 3)
    running = pods(wl, "web")
    hashes = {p["metadata"]["labels"]["pod-template-hash"] for p in running}
    assert len(running) == 3 and len(hashes) == 1
    rs_name = f"web-{hashes.pop()}"
    for p in running:  # <replicaset>-<5 characters of Kubernetes' alphabet>
        suffix = p["metadata"]["name"].removeprefix(rs_name + "-")
        assert len(suffix) == 5 and set(suffix) <= set("bcdfghjklmnpqrstvwxz2456789")
        assert p["metadata"]["ownerReferences"][0]["name"] == rs_name
    assert {p["spec"]["nodeName"] for p in running} == {"n1", "n2"}  # spread over both nodes
    rc, out, _ = podlab(capsys, wl, "get", "deployments,replicasets")
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert lines[1].split()[:4] == ["deployment.apps/web", "3/3", "3", "3"]
    assert lines[3].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert lines[4].split()[:4] == [f"replicaset.apps/{rs_name}", "3", "3", "3"]


def test_a_rolling_update_keeps_its_fenceposts_and_can_be_undone(wl, capsys, tmp_path) -> None:
    d = deployment("web", 4, strategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}})
    d["spec"]["template"]["spec"]["containers"][0]["command"] = [*ECHO, "--name", "v2"]
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def watch() -> None:  # totals and availability through the rollout, every 0.1 s
        while not stop.is_set():
            sets = [
                rs.json() for rs in wl.lab.store.get_prefix("/podlab/v1/t1/replicasets/default/")[0]
            ]
            sts = [
                s.json()
                for s in wl.lab.store.get_prefix("/podlab/v1/t1/replicasetstatus/default/")[0]
            ]
            seen.append((sum(rs["spec"]["replicas"] for rs in sets),
                         sum(s.get("availableReplicas", 0) for s in sts)))  # fmt: skip
            stop.wait(0.1)

    apply(capsys, wl, tmp_path, deployment("web", 4))  # scale 3 → 4 first (not a rollout)
    rolled_out(capsys, wl, "web")
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    apply(capsys, wl, tmp_path, d)
    out = rolled_out(capsys, wl, "web")
    stop.set()
    watcher.join()
    assert out.strip().endswith('deployment "web" successfully rolled out'), out
    assert max(total for total, _ in seen) <= 5  # replicas + maxSurge
    # replicas − maxUnavailable, over every sample (a quiet machine rolls 4 pods out
    # in well under a second: there may be only a few)
    assert seen and min(avail for _, avail in seen) >= 3, seen
    rc, out, _ = podlab(capsys, wl, "rollout", "history", "deployment/web")
    assert rc == 0 and out.splitlines()[1:4] == ["REVISION  CHANGE-CAUSE", "1         <none>",
                                                   "2         <none>"]  # fmt: skip
    rc, out, _ = podlab(capsys, wl, "rollout", "undo", "deployment/web")
    assert (rc, out) == (0, "deployment.apps/web rolled back\n")
    rolled_out(capsys, wl, "web")
    names = {p["status"].get("phase") and p["metadata"]["labels"]["pod-template-hash"]
             for p in pods(wl, "web") if not p["metadata"].get("deletionTimestamp")}  # fmt: skip
    rc, out, _ = podlab(capsys, wl, "rollout", "history", "deployment/web")
    assert out.splitlines()[2:] == ["2         <none>", "3         <none>", ""]  # 1 became 3
    assert len(names) == 1
    rc, out, _ = podlab(capsys, wl, "rollout", "restart", "deployment/web")
    assert (rc, out) == (0, "deployment.apps/web restarted\n")
    rolled_out(capsys, wl, "web")


def test_quota_refusals_read_like_the_apiserver_and_a_stalled_rollout_names_it(
    wl, capsys, tmp_path
) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "q"}}
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "compute", "namespace": "q"},
        "spec": {"hard": {"pods": "2", "requests.cpu": "1"}},
    }
    apply(capsys, wl, tmp_path, ns, quota)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lone", "namespace": "q"},
           "spec": {"containers": [{"name": "c", "command": ["sleep", "600"]}]}}  # fmt: skip
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    rc, _, err = podlab(capsys, wl, "apply", "-f", str(path))
    assert rc == 2
    assert "failed quota: compute: must specify requests.cpu for: c" in err
    apply(capsys, wl, tmp_path, deployment("capped", 3, ns="q"))
    started = time.monotonic()
    rc, out, err = podlab(capsys, wl, "rollout", "status", "deployment/capped", "-n", "q",
                          "--timeout", "60")  # fmt: skip
    assert rc == 1 and time.monotonic() - started < 30, (out, err)
    assert 'deployment "capped" cannot create its pods (FailedCreate): pods "capped-' in err
    assert (
        "is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
        in err
    )
    d = get(wl, "deploy", "capped", "q")
    failure = next(c for c in d["status"]["conditions"] if c["type"] == "ReplicaFailure")
    assert failure["reason"] == "FailedCreate"
    rc, out, _ = podlab(capsys, wl, "get", "quota", "-n", "q")
    assert out.splitlines()[1].split()[2:] == ["pods:", "2/2,", "requests.cpu:", "200m/1"]
    rc, _, _ = podlab(capsys, wl, "delete", "resourcequota", "compute", "-n", "q")
    assert rc == 0

    def failure_cleared() -> bool:  # the controller retries and drops the condition
        conds = get(wl, "deploy", "capped", "q")["status"]["conditions"]
        return not any(c["type"] == "ReplicaFailure" for c in conds)

    # rollout status fails fast on ReplicaFailure: ask it only once the quota's
    # refusal is no longer the deployment's state
    wait_for("the ReplicaFailure condition cleared after the quota's removal", failure_cleared)
    rolled_out(capsys, wl, "capped", ns="q")  # the quota gone, the ReplicaSet creates the third pod


def test_a_controller_manager_killed_mid_rollout_finishes_it_after_a_restart(
    wl, capsys, tmp_path
) -> None:
    slow = {
        "minReadySeconds": 2,
        "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
    }
    apply(capsys, wl, tmp_path, deployment("slow", 3, **slow))
    rolled_out(capsys, wl, "slow")
    changed = deployment("slow", 3, **slow)
    changed["spec"]["template"]["spec"]["containers"][0]["command"] = [*ECHO, "--name", "v2"]
    apply(capsys, wl, tmp_path, changed)
    wait_for("a new ReplicaSet", lambda: len(wl.lab.store.get_prefix(
        "/podlab/v1/t1/replicasets/default/slow-")[0]) == 2, timeout=30)  # fmt: skip
    wl.ctl.stop(hard=True)  # kill -9 mid-rollout
    time.sleep(1)
    wl.ctl.start()
    rolled_out(capsys, wl, "slow", timeout=120)
    d = get(wl, "deploy", "slow")
    assert (d["status"]["replicas"], d["status"]["updatedReplicas"]) == (3, 3)
    live = [p for p in pods(wl, "slow") if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 3 and len({p["metadata"]["labels"]["pod-template-hash"] for p in live}) == 1


def test_a_pod_over_its_memory_limit_is_oom_killed_and_restarted(wl, capsys, tmp_path) -> None:
    script = "import time\nx=[]\nwhile True:\n x.append(bytearray(4<<20)); time.sleep(0.02)"
    limits = {"limits": {"memory": "48Mi", "cpu": "500m"}}
    container = {"name": "hog", "command": [sys.executable, "-c", script], "resources": limits}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hog", "labels": {"app": "hog"}},
        "spec": {"containers": [container]},
    }
    apply(capsys, wl, tmp_path, pod)

    def oom() -> dict[str, Any] | None:
        got = pods(wl, "hog")
        cs = (got[0]["status"].get("containerStatuses") or [{}])[0] if got else {}
        return cs if cs.get("lastState", {}).get("terminated", {}).get("reason") else None

    cs = wait_for("an OOM kill", oom, timeout=60)
    assert cs["lastState"]["terminated"] == {**cs["lastState"]["terminated"],
                                             "reason": "OOMKilled", "exitCode": 137}  # fmt: skip
    assert cs["restartCount"] >= 1
    stored = pods(wl, "hog")[0]["spec"]["containers"][0]["resources"]
    assert stored["requests"] == {"memory": "48Mi", "cpu": "500m"}  # requests defaulted
    podlab(capsys, wl, "delete", "pod", "hog", "--grace-period", "0")


def test_the_autoscaler_follows_cpu_and_comes_back_after_its_window(wl, capsys, tmp_path) -> None:
    apply(capsys, wl, tmp_path, deployment("burn", 1))
    rolled_out(capsys, wl, "burn")
    hpa = autoscaling.cpu_hpa_manifest("burn", None, 1, 3, 50, scale_down_window_s=8)
    apply(capsys, wl, tmp_path, hpa)
    victim = pods(wl, "burn")[0]
    node = next(n for n in wl.lab.nodes if n.name == victim["spec"]["nodeName"])
    load = wl.lab.ns_run_bg(node, [sys.executable, "-m", "harness.probes.netcheck", "hstream",
                                   "--target", victim["status"]["podIP"], "--port", "8080",
                                   "--path", "/burn?ms=20", "--interval", "0.1",
                                   "--duration", "60"])  # fmt: skip
    try:
        wait_for(
            "a scale-up", lambda: get(wl, "deploy", "burn")["spec"]["replicas"] > 1, timeout=60
        )
        rc, out, _ = podlab(capsys, wl, "get", "hpa")
        row = out.splitlines()[1].split()
        assert (
            rc == 0 and row[:3] == ["burn", "Deployment/burn", "cpu:"] and row[3].endswith("/50%")
        )
        rc, out, _ = podlab(capsys, wl, "top", "pods")
        assert rc == 0 and out.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    finally:
        load.kill()
        load.wait()
    stopped = time.monotonic()
    wait_for(
        "the scale-down", lambda: get(wl, "deploy", "burn")["spec"]["replicas"] == 1, timeout=90
    )
    assert time.monotonic() - stopped >= 8 - 2  # not before the 8 s window (less one sync)
    status = get(wl, "hpa", "burn")["status"]
    assert status["desiredReplicas"] == 1 and json.dumps(status["conditions"])
