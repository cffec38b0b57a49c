"""Scenario 33: ResourceQuota and LimitRange refuse with the apiserver's words; a rollout
blocked by quota is reported at once, naming the quota.

In a namespace of its own (a quota counts the whole namespace), through the
``podlab`` CLI a user types:

1. a ResourceQuota ``compute`` (pods 3, requests.cpu 500m, limits.memory
   512Mi) and a pod stating no resources: refused, ``failed quota: compute:
   must specify limits.memory for: main; requests.cpu for: main``, nothing
   written;
2. a LimitRange with container defaults, and the same pod: admitted, with the
   defaults in its spec and LimitRanger's ``kubernetes.io/limit-ranger``
   annotation (the control for 1: the pod itself was never the problem);
3. a pod over the LimitRange's max (``maximum cpu usage per Container is 1,
   but limit is 2``) and one over the quota's requests.cpu (``exceeded quota:
   compute, requested: requests.cpu=450m, used: requests.cpu=100m, limited:
   requests.cpu=500m``): refused, nothing written;
4. a Deployment of 3 (defaults from the LimitRange) next to that pod: the
   ReplicaSet controller's third create is refused (``exceeded quota: compute,
   requested: pods=1, used: pods=3, limited: pods=3``); the Deployment shows
   ``ReplicaFailure``/``FailedCreate`` and ``podlab rollout status`` fails at
   once naming the quota, long before the 600 s progress deadline;
5. the control for 4: the lone pod deleted, the quota frees a slot and the
   same rollout completes.

Recorded: ``quota_stalled_rollout_reported_s`` (Deployment applied →
``rollout status`` exits naming the quota), ``quota_freed_rollout_s`` (lone pod
deleted → rolled out). Cost "once": admission is the API's and the controller
manager's, not the datapath's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.api.objects import KINDS
from harness.conformance import services as svc
from harness.conformance.labctl import Lab
from harness.conformance.remote import Node
from harness.conformance.workloads import Cli, Obj, live_pods, podlab
from harness.kube import apps

NS = "wl-quota"
QUOTA = "compute"
APP = "quota-web"
SLEEP = ["sleep", "3600"]
REPORTED_BUDGET_S = 30.0  # "at once": far inside the default 600 s progress deadline
LIMIT_RANGER = "LimitRanger plugin set: cpu, memory request for container main; cpu, memory limit for container main"  # noqa: E501


def pod(name: str, resources: dict[str, Any] | None = None) -> Obj:
    container: dict[str, Any] = {"name": "main", "command": SLEEP}
    if resources:
        container["resources"] = resources
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": dict(svc.SUITE_LABEL)},
            "spec": {"containers": [container]}}  # fmt: skip


def sized(cpu: str) -> dict[str, Any]:
    """A container's resources requesting ``cpu`` (limits inside the LimitRange's max)."""
    return {"requests": {"cpu": cpu}, "limits": {"cpu": "1", "memory": "64Mi"}}


def quota() -> Obj:
    hard = {"pods": "3", "requests.cpu": "500m", "limits.memory": "512Mi"}
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": QUOTA, "namespace": NS}, "spec": {"hard": hard}}  # fmt: skip


def limit_range() -> Obj:
    item = {"type": "Container", "default": {"cpu": "200m", "memory": "64Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "32Mi"}, "max": {"cpu": "1"}}  # fmt: skip
    meta = {"name": "defaults", "namespace": NS}
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": meta,
            "spec": {"limits": [item]}}  # fmt: skip


def web(replicas: int = 3) -> Obj:
    container = {"name": "main", "command": SLEEP}
    labels = {**svc.SUITE_LABEL, "app": APP}
    return apps.deployment_manifest(APP, NS, replicas, container, labels=labels)


@pytest.fixture
def quota_ns(lab: Lab, mode: str, nodes: dict[str, Node]) -> Iterator[svc.Objects]:
    """The namespace with its quota (in the run's mode: the deployed lab); everything made
    in it removed afterwards."""
    objs = svc.Objects(lab.client(), nodes)
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    try:
        objs.apply([ns, quota()])
        yield objs
    finally:
        if ("Deployment", NS, APP) in objs.others:
            objs.remove("Deployment", NS, APP)
        # the garbage collector removes the ReplicaSet's pods once the Deployment is gone
        svc.until(f"pods of {APP} removed", lambda: not live_pods(objs, APP, NS), 90)
        objs.delete_all()


def apply_cli(lab: Lab, tmp: Path, manifest: Obj) -> Cli:
    """``podlab apply -f FILE`` of one manifest, as a user runs it."""
    path = tmp / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return podlab(lab, "apply", "-f", str(path))


def pod_names(objs: svc.Objects) -> set[str]:
    return {p["metadata"]["name"] for p in objs.client.list_objects(KINDS["Pod"], NS)}


def refused(lab: Lab, objs: svc.Objects, tmp: Path, manifest: Obj, message: str) -> None:
    """The apply exits 2 with the apiserver's message, and the pod was not written."""
    got = apply_cli(lab, tmp, manifest)
    name = manifest["metadata"]["name"]
    assert got.rc == 2, f"{name}: apply exited {got.rc}, expected a refusal: {got.out}{got.err}"
    assert f'pods "{name}" is forbidden: {message}' in got.err, got.err
    assert name not in pod_names(objs), f"refused pod {name} was written anyway"


@pytest.mark.scenario(33)
def test_quota_and_limit_range_refuse_with_the_apiservers_words(
    lab: Lab, quota_ns: svc.Objects, tmp_path: Path
) -> None:
    objs = quota_ns
    must = f"failed quota: {QUOTA}: must specify limits.memory for: main; requests.cpu for: main"
    refused(lab, objs, tmp_path, pod("quota-lone"), must)
    objs.apply([limit_range()])
    objs.apply([pod("quota-lone")])  # the same pod, now with the LimitRange's defaults
    lone = objs.client.get(KINDS["Pod"], NS, "quota-lone")
    res = lone["spec"]["containers"][0].get("resources", {})
    assert res == {"limits": {"cpu": "200m", "memory": "64Mi"},
                   "requests": {"cpu": "100m", "memory": "32Mi"}}, res  # fmt: skip
    assert lone["metadata"].get("annotations", {}).get("kubernetes.io/limit-ranger") == LIMIT_RANGER
    big = pod("quota-big", {"limits": {"cpu": "2", "memory": "64Mi"}})
    refused(lab, objs, tmp_path, big, "maximum cpu usage per Container is 1, but limit is 2")
    greedy = pod("quota-greedy", sized("450m"))
    exceeded = (f"exceeded quota: {QUOTA}, requested: requests.cpu=450m, "
                "used: requests.cpu=100m, limited: requests.cpu=500m")  # fmt: skip
    refused(lab, objs, tmp_path, greedy, exceeded)
    fits = pod("quota-fits", sized("400m"))
    fitted = apply_cli(lab, tmp_path, fits)  # control: what the quota leaves is still admitted
    assert fitted.rc == 0, fitted.err
    objs.pods.append((NS, "quota-fits"))  # removed with the namespace's other pods


@pytest.mark.scenario(33)
def test_a_rollout_blocked_by_quota_is_reported_at_once_naming_it(
    lab: Lab, quota_ns: svc.Objects, record: Any
) -> None:
    objs = quota_ns
    objs.apply([limit_range()])
    objs.apply([pod("quota-lone")])
    objs.apply([web(3)])
    applied = time.monotonic()
    status = podlab(lab, "rollout", "status", f"deployment/{APP}", "-n", NS, "--timeout", "120")
    reported = time.monotonic() - applied
    record("quota_stalled_rollout_reported_s", reported, "s", threshold=REPORTED_BUDGET_S)
    exceeded = f"exceeded quota: {QUOTA}, requested: pods=1, used: pods=3, limited: pods=3"
    assert status.rc != 0, f"rollout status succeeded past the quota: {status.out}"
    assert f'deployment "{APP}" cannot create its pods (FailedCreate): pods "{APP}-' in status.err
    assert exceeded in status.err, status.err
    assert reported <= REPORTED_BUDGET_S, (
        f"rollout status took {reported:.1f} s to report the quota (budget {REPORTED_BUDGET_S} s)"
    )
    d = objs.client.get(KINDS["Deployment"], NS, APP)
    conds = {c["type"]: c for c in d.get("status", {}).get("conditions", [])}
    failure = conds.get("ReplicaFailure", {})
    assert (failure.get("status"), failure.get("reason")) == ("True", "FailedCreate"), conds
    made = [p for p in live_pods(objs, APP, NS) if not p["metadata"].get("deletionTimestamp")]
    assert len(made) == 2, f"{len(made)} pods of {APP} beside quota-lone under a 3-pod quota"
    annotations = made[0]["metadata"].get("annotations", {})
    assert annotations.get("kubernetes.io/limit-ranger") == LIMIT_RANGER, annotations
    # the control: a slot freed, the same rollout goes through
    objs.remove("Pod", NS, "quota-lone")
    freed = time.monotonic()

    def failure_cleared() -> bool:
        st = objs.client.get(KINDS["Deployment"], NS, APP).get("status", {})
        return not any(c.get("type") == "ReplicaFailure" for c in st.get("conditions", []))

    svc.until("ReplicaFailure cleared once the quota has room", failure_cleared, 90, 0.5)
    done = podlab(lab, "rollout", "status", f"deployment/{APP}", "-n", NS, "--timeout", "90")
    assert done.rc == 0, f"{done.out}{done.err}"
    assert done.out.strip().endswith(f'deployment "{APP}" successfully rolled out'), done.out
    record("quota_freed_rollout_s", time.monotonic() - freed, "s")
