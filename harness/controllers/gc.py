"""Garbage collection and quota usage: what outlives its owner goes; quotas show use.

Kubernetes' garbage collector deletes dependents whose controller owner is
gone (background propagation): a ReplicaSet whose Deployment was deleted, a
pod whose ReplicaSet was (pods go gracefully, as ``podlab delete pod``), and
the status records left by deleted workloads. The ResourceQuota controller
keeps ``status.used`` (``resourcequotastatus/<ns>/<name>``) equal to what the
namespace's objects use, so ``podlab get quota`` is current after deletions
(admission itself always recounts).
"""

from __future__ import annotations

from typing import Any

from harness.controllers import common
from harness.controllers.common import log, meta, ns_name
from harness.controllers.view import View
from harness.kube import admission

Obj = dict[str, Any]
OWNERS = {"Deployment": "deployments", "ReplicaSet": "replicasets"}
STATUS = {
    "deploymentstatus": "deployments",
    "replicasetstatus": "replicasets",
    "hpastatus": "horizontalpodautoscalers",
    "resourcequotastatus": "resourcequotas",
}
COUNTED = (
    ("services", "services"),
    ("deployments", "deployments.apps"),
    ("replicasets", "replicasets.apps"),
    ("horizontalpodautoscalers", "horizontalpodautoscalers.autoscaling"),
    ("resourcequotas", "resourcequotas"),
    ("limitranges", "limitranges"),
)


def _uids(view: View, folder: str) -> set[str]:
    return {str(meta(r.obj).get("uid")) for r in view.records(folder)}


def collect(view: View, now: float) -> None:
    live = {kind: _uids(view, folder) for kind, folder in OWNERS.items()}
    for rec in view.records("replicasets"):
        owner = common.controller_of(rec.obj)
        if _orphan(owner, live) and view.delete(rec.key, rec.rev):
            log.info("gc: deleted replicaset %s (its owner is gone)", rec.key)
    live["ReplicaSet"] = _uids(view, "replicasets")
    for p in common.pods(view):
        owner = common.controller_of(p.obj)
        if _orphan(owner, live) and not p.deleting and common.delete_pod(view, p, now):
            log.info("gc: deleting pod %s (its owner is gone)", p.record.key)
    for folder, owner_folder in STATUS.items():
        names = {ns_name(r.obj) for r in view.records(owner_folder)}
        for rec in view.records(folder):
            ns, name = rec.key.rsplit("/", 2)[-2:]
            if (ns, name) not in names:
                view.delete(rec.key, rec.rev)


def quotas(view: View, now: float) -> None:
    """Every quota's ``used``, recounted from the namespace's objects."""
    for rec in view.records("resourcequotas"):
        ns, name = ns_name(rec.obj)
        hard = dict((rec.obj.get("spec") or {}).get("hard") or {})
        objects: list[tuple[str, Obj, str | None]] = [
            ("pods", p.obj, p.phase if p.status else None) for p in common.pods(view, ns)
        ]
        for folder, resource in COUNTED:
            objects += [(resource, r.obj, None) for r in view.records(folder, ns)]
        used = admission.used(hard, objects, now)
        skey = view.key("resourcequotastatus", ns, name)
        old = view.get(skey)
        status = {"hard": dict(sorted(hard.items())),
                  "used": {k: str(used[k]) for k in sorted(used)}}  # fmt: skip
        if old is None or old.obj != status:
            view.put(skey, status, old.rev if old else 0)


def _orphan(owner: Obj | None, live: dict[str, set[str]]) -> bool:
    if owner is None:
        return False
    kind = str(owner.get("kind"))
    return kind in live and str(owner.get("uid")) not in live[kind]
