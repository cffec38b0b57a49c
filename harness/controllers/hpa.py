"""The HorizontalPodAutoscaler controller: every sync period, each HPA once.

Reads the target's scale (a Deployment's or ReplicaSet's ``spec.replicas`` and
selector), the selected pods with their status, and their CPU and memory use
from the node agents' ``nodemetrics/<node>`` records (the data metrics-server
would serve), runs ``harness.kube.horizontal.reconcile``, and writes the
target's new ``spec.replicas`` (guarded), the HPA's status
(``hpastatus/<ns>/<name>``) and the autoscaler's memory of recommendations and
scale events (``controllers/hpa/<ns>/<name>``), so that a restarted controller
manager still honours a stabilization window that began before it.
"""

from __future__ import annotations

import copy
from typing import Any

from harness.controllers import common
from harness.controllers.common import log, meta, ns_name
from harness.controllers.view import Record, View
from harness.kube import apps, deployutil, horizontal, labels, resources
from harness.kube.hpacalc import Config, HPAState, PodView, Sample
from harness.kube.quantity import Quantity
from harness.store import keys

Obj = dict[str, Any]
TARGET_FOLDERS = {"Deployment": ("deployments", "deployments.apps"),
                  "ReplicaSet": ("replicasets", "replicasets.apps")}  # fmt: skip


def state_key(view: View, ns: str, name: str) -> str:
    return f"{keys.controllers_prefix(view.cluster)}hpa/{ns}/{name}"


def samples(view: View) -> dict[str, dict[str, Sample]]:
    """resource → "<ns>/<pod>" → usage in milli-units, from every node's metrics."""
    out: dict[str, dict[str, Sample]] = {"cpu": {}, "memory": {}}
    for rec in view.records("nodemetrics"):
        ts = float(rec.obj.get("timestamp") or 0.0)
        window = float(rec.obj.get("window") or 0.0)
        for ref, usage in (rec.obj.get("pods") or {}).items():
            for resource in ("cpu", "memory"):
                text = usage.get(resource)
                if text is not None:
                    value = Quantity.parse(text).milli_value()
                    out[resource][ref] = Sample(value, ts, window)
    return out


def pod_view(p: common.PodInfo, ns: str) -> PodView:
    reqs = resources.pod_requests(p.obj)
    cond = p.condition("Ready")
    requests: dict[str, int | None] = {}
    for resource in ("cpu", "memory"):
        every = all(
            resource in resources.defaulted(c.get("resources"))["requests"]
            for c in resources.containers(p.obj)
        )
        requests[resource] = reqs[resource].milli_value() if every and resource in reqs else None
    return PodView(
        name=f"{ns}/{p.name}",
        phase=p.phase,
        deleting=p.deleting,
        ready=None if cond is None else str(cond.get("status")),
        ready_since=p.ready_since,
        start_time=deployutil.parse_time(p.status.get("startTime")),
        requests=requests,
    )


def sync(
    view: View, hpa_rec: Record, cfg: Config, usage: dict[str, dict[str, Sample]], now: float
) -> None:
    hpa = hpa_rec.obj
    ns, name = ns_name(hpa)
    status_key = view.key("hpastatus", ns, name)
    status_rec = view.get(status_key)
    hpa = {**hpa, "status": copy.deepcopy(status_rec.obj) if status_rec else {}}
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    folder, resource = TARGET_FOLDERS.get(str(ref.get("kind")), ("", ""))
    target = view.get(view.key(folder, ns, str(ref.get("name")))) if folder else None
    skey = state_key(view, ns, name)
    srec = view.get(skey)
    state = HPAState.from_json(srec.obj if srec else None)
    status: Obj = {
        "observedGeneration": int(meta(hpa).get("generation") or 1),
        "currentReplicas": 0,
        "desiredReplicas": 0,
        "conditions": list(hpa["status"].get("conditions") or []),
    }
    if hpa["status"].get("lastScaleTime"):
        status["lastScaleTime"] = hpa["status"]["lastScaleTime"]
    if target is None:
        err = f'{resource or ref.get("kind")} "{ref.get("name")}" not found'
        msg = f"the HPA controller was unable to get the target's current scale: {err}"
        horizontal.set_condition(
            status["conditions"], "AbleToScale", "False", "FailedGetScale", msg, now
        )
        _write(view, status_key, status_rec, status)
        return
    selector = (target.obj.get("spec") or {}).get("selector")
    pods = [
        pod_view(p, ns)
        for p in common.pods(view, ns)
        if labels.matches(selector, meta(p.obj).get("labels"))
    ]
    current = apps.replicas(target.obj)
    decision = horizontal.reconcile(hpa, current, pods, usage, state, cfg, now)
    status["currentReplicas"] = current
    status["desiredReplicas"] = decision.desired
    status["conditions"] = decision.conditions
    if decision.current_metrics and any(m.get("type") for m in decision.current_metrics):
        status["currentMetrics"] = [m for m in decision.current_metrics if m.get("type")]
    if decision.rescale:
        obj = copy.deepcopy(target.obj)
        obj["spec"]["replicas"] = decision.desired
        obj["metadata"]["generation"] = int(obj["metadata"].get("generation") or 1) + 1
        if view.put(target.key, obj, target.rev):
            status["lastScaleTime"] = deployutil.rfc3339(now)
        else:
            msg = "the HPA controller was unable to update the target scale: the object changed"
            horizontal.set_condition(
                status["conditions"], "AbleToScale", "False", "FailedUpdateScale", msg, now
            )
    if decision.event is not None:
        kind, reason, text = decision.event
        log.info("hpa %s/%s: %s %s: %s", ns, name, kind, reason, text)
    _write(view, status_key, status_rec, status)
    if srec is None or srec.obj != state.to_json():
        view.put(skey, state.to_json(), srec.rev if srec else 0)


def _write(view: View, key: str, old: Record | None, status: Obj) -> None:
    if old is None or old.obj != status:
        view.put(key, status, old.rev if old else 0)
