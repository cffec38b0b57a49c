"""The scheduler: bind every pod that names no node (harness/kube/scheduling.py).

Pods are taken oldest first; each binding is a guarded write of the pod object
with ``spec.nodeName`` (Kubernetes' Binding), so a pod deleted or changed
meanwhile is left for the next pass. A pod that fits nowhere stays Pending
with the ``PodScheduled=False`` condition, reason ``Unschedulable`` and
kube-scheduler's message, in the pod's status record (its node's agent
replaces that record once it runs the pod).
"""

from __future__ import annotations

import copy
from typing import Any

from harness.controllers import common
from harness.controllers.common import log, meta, ns_name
from harness.controllers.view import View
from harness.kube import deployutil, scheduling

Obj = dict[str, Any]


def nodes(view: View, now: float) -> list[scheduling.NodeInfo]:
    """Every node with what its pods already request."""
    infos = {
        str(r.obj.get("name")): scheduling.NodeInfo.from_record(r.obj, now)
        for r in view.records("nodes")
    }
    for p in common.pods(view):
        if p.node in infos and not p.terminal:
            infos[p.node].add(p.obj)
    return [infos[n] for n in sorted(infos)]


def sync(view: View, now: float) -> int:
    """Bind what can be bound; returns how many pods were bound."""
    pending = [p for p in common.pods(view) if not p.node and not p.deleting and not p.terminal]
    if not pending:
        return 0
    infos = nodes(view, now)
    bound = 0
    for p in sorted(pending, key=lambda p: (p.created, p.record.key)):
        node, why = scheduling.choose(p.obj, infos)
        ns, name = ns_name(p.obj)
        if node is None:
            _unschedulable(view, p, why, now)
            continue
        obj = copy.deepcopy(p.obj)
        obj.setdefault("spec", {})["nodeName"] = node.name
        if view.put(p.record.key, obj, p.record.rev):
            bound += 1
            log.info("scheduler: bound %s/%s to %s", ns, name, node.name)
    return bound


def _unschedulable(view: View, p: common.PodInfo, why: str, now: float) -> None:
    ns, name = ns_name(p.obj)
    key = view.key("podstatus", ns, name)
    current = view.get(key)
    uid = meta(p.obj).get("uid")
    if current is not None and current.obj.get("uid") == uid and current.obj.get("hostIP"):
        return  # an agent reports on it: not ours to write
    old = (current.obj.get("conditions") or [{}])[0] if current else {}
    if old.get("message") == why:
        return
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": why, "lastTransitionTime": deployutil.rfc3339(now)}  # fmt: skip
    status = {"uid": uid, "phase": "Pending", "conditions": [cond]}
    view.put(key, status, current.rev if current else 0)
    log.info("scheduler: %s/%s unschedulable: %s", ns, name, why)
