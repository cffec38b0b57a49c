"""What every controller needs to know about pods and owners.

A pod is *active* while it is neither terminal (Succeeded, Failed) nor being
deleted; *ready* when its agent reports the Ready condition True; *available*
once it has been ready for ``minReadySeconds`` (by the Ready condition's
``lastTransitionTime``, as Kubernetes' ``IsPodAvailable`` reads it). Owners are
``metadata.ownerReferences`` with ``controller: true``, matched by uid, so a
Deployment deleted and re-created under the same name does not adopt the old
one's ReplicaSets.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any

from harness.controllers.view import Record, View
from harness.kube import deployutil

Obj = dict[str, Any]
log = logging.getLogger("podlab.controllers")
DEFAULT_GRACE_S = 30


def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def ns_name(obj: Obj) -> tuple[str, str]:
    m = meta(obj)
    return str(m.get("namespace") or "default"), str(m.get("name") or "")


def controller_of(obj: Obj) -> Obj | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owned_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_of(obj)
    return ref is not None and ref.get("uid") == meta(owner).get("uid")


def controller_ref(owner: Obj, kind: str, api_version: str) -> Obj:
    m = meta(owner)
    return {"apiVersion": api_version, "kind": kind, "name": m.get("name"), "uid": m.get("uid"),
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def new_identity(obj: Obj, now: float) -> None:
    """uid, creationTimestamp and generation, as the apiserver sets them on create."""
    m = obj.setdefault("metadata", {})
    m["uid"] = str(uuid.uuid4())
    m["creationTimestamp"] = deployutil.rfc3339(now)
    m.setdefault("generation", 1)


SUFFIX_ALPHABET = deployutil.SAFE_ALPHABET


def random_suffix(n: int = 5) -> str:
    """``utilrand.String(5)``: the suffix of a generated name."""
    return "".join(random.choice(SUFFIX_ALPHABET) for _ in range(n))


@dataclass(frozen=True)
class PodInfo:
    """A pod with what its agent reported."""

    record: Record
    status: Obj
    status_rev: int

    @property
    def obj(self) -> Obj:
        return self.record.obj

    @property
    def name(self) -> str:
        return ns_name(self.obj)[1]

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")

    @property
    def deleting(self) -> bool:
        return bool(meta(self.obj).get("deletionTimestamp"))

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def active(self) -> bool:
        return not self.terminal and not self.deleting

    @property
    def node(self) -> str:
        return str((self.obj.get("spec") or {}).get("nodeName") or "")

    def condition(self, kind: str) -> Obj | None:
        return next((c for c in self.status.get("conditions") or [] if c.get("type") == kind), None)

    @property
    def ready(self) -> bool:
        cond = self.condition("Ready")
        return self.phase == "Running" and cond is not None and cond.get("status") == "True"

    @property
    def ready_since(self) -> float | None:
        cond = self.condition("Ready")
        if cond is None:
            return None
        return deployutil.parse_time(cond.get("lastTransitionTime")) or deployutil.parse_time(
            self.status.get("startTime")
        )

    def available(self, min_ready_s: int, now: float) -> bool:
        if not self.ready:
            return False
        if min_ready_s <= 0:
            return True
        since = self.ready_since
        return since is not None and since + min_ready_s <= now

    def available_at(self, min_ready_s: int) -> float | None:
        """When a ready pod becomes available (for the controller's next wake-up)."""
        since = self.ready_since if self.ready else None
        return None if since is None else since + min_ready_s

    @property
    def restarts(self) -> int:
        return sum(
            int(c.get("restartCount") or 0) for c in self.status.get("containerStatuses") or []
        )

    @property
    def created(self) -> float:
        return deployutil.parse_time(meta(self.obj).get("creationTimestamp")) or 0.0


def pods(view: View, namespace: str | None = None) -> list[PodInfo]:
    """Every pod of a namespace (or all) with its status (a stale status of an earlier
    pod of the same name is ignored, by uid)."""
    out = []
    for rec in view.records("pods", namespace):
        ns, name = ns_name(rec.obj)
        st = view.get(view.key("podstatus", ns, name))
        status: Obj = {}
        rev = 0
        if st is not None:
            rev = st.rev
            uid = st.obj.get("uid")
            if not uid or uid == meta(rec.obj).get("uid"):
                status = st.obj
        out.append(PodInfo(rec, status, rev))
    return out


def delete_pod(view: View, pod: PodInfo, now: float) -> bool:
    """Delete gracefully, as ``podlab delete pod`` does: a pod its agent runs gets
    ``deletionTimestamp`` and its grace period; one no agent reported on goes at once."""
    rec = pod.record
    if pod.deleting:
        return True
    ns, name = ns_name(rec.obj)
    if not pod.status or pod.status.get("uid") != meta(rec.obj).get("uid"):
        ok = view.delete(rec.key, rec.rev)
        if ok:
            view.delete(view.key("podstatus", ns, name), None)
        return ok
    obj = {**rec.obj, "metadata": dict(meta(rec.obj))}
    grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds")
    obj["metadata"]["deletionTimestamp"] = deployutil.rfc3339(now)
    obj["metadata"]["deletionGracePeriodSeconds"] = DEFAULT_GRACE_S if grace is None else grace
    return view.put(rec.key, obj, rec.rev)
