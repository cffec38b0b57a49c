"""The ReplicaSet controller: keep ``spec.replicas`` pods, report what they do.

``manageReplicas``: too few active pods → create the missing ones in
slow-start batches (1, 2, 4, …; a refused pod ends the pass, as Kubernetes'
``slowStartBatch`` stops after a failed batch), each admitted exactly as
``podlab apply`` admits a pod (pod defaulting, LimitRanger, ResourceQuota;
``harness.kube.admission``) and written in one guarded transaction with the
quotas' new usage; too many → delete the lowest-ranked ones gracefully
(unscheduled < scheduled, Pending < Running, not ready < ready, more pods of
this set on the node first, most recently ready, more restarts, newest —
``ActivePodsWithRanks`` without the logarithmic bucketing).

Status (``replicasetstatus/<ns>/<name>``): replicas, fullyLabeledReplicas,
readyReplicas, availableReplicas, observedGeneration, and the
``ReplicaFailure`` condition (``FailedCreate`` with the refusal, e.g. the quota
message) while creating or deleting fails; removed once it succeeds. Pods are
named ``<set>-<5 random characters>`` and their refusals name
``pods "<set>-"``, as Kubernetes' generateName does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.controllers import common
from harness.controllers.common import PodInfo, log, meta, ns_name
from harness.controllers.view import Record, View
from harness.kube import admission, apps, deployutil, labels

Obj = dict[str, Any]
BURST = 500  # --replicaset-burst-replicas... Kubernetes' burstReplicas
MAX_BATCH = 64  # etcd takes 128 operations per transaction: pods plus quota statuses


@dataclass
class Namespace:
    """What admission needs in one namespace, with usage kept current across writes."""

    limitranges: list[Obj]
    # (name, hard, used, status key, status revision)
    quotas: list[tuple[str, dict[str, str], admission.Usage, str, int]] = field(
        default_factory=list
    )
    dirty: set[str] = field(default_factory=set)  # quotas whose usage grew since the last write


def namespace_admission(view: View, ns: str, pods: list[PodInfo], now: float) -> Namespace:
    out = Namespace([r.obj for r in view.records("limitranges", ns)])
    objects = [("pods", p.obj, p.phase if p.status else None) for p in pods]
    for rec in view.records("resourcequotas", ns):
        name = ns_name(rec.obj)[1]
        hard = dict((rec.obj.get("spec") or {}).get("hard") or {})
        used = admission.used(hard, objects, now)
        skey = view.key("resourcequotastatus", ns, name)
        st = view.get(skey)
        out.quotas.append((name, hard, used, skey, st.rev if st else 0))
    return out


def sync(view: View, rs_rec: Record, pods: list[PodInfo], now: float) -> float | None:
    """One ReplicaSet; returns when it wants to be looked at again (a pod becoming
    available after minReadySeconds), or None."""
    rs = rs_rec.obj
    ns, name = ns_name(rs)
    mine = [p for p in pods if common.owned_by(p.obj, rs)]
    active = [p for p in mine if p.active]
    want = apps.replicas(rs)
    error = ""
    if not meta(rs).get("deletionTimestamp"):
        diff = len(active) - want
        if diff < 0:
            error = _create(view, rs, min(-diff, BURST), pods, now)
        elif diff > 0:
            error = _delete(view, mine, active, min(diff, BURST), now)
    mine = [p for p in common.pods(view, ns) if common.owned_by(p.obj, rs)]
    active = [p for p in mine if p.active]
    _write_status(view, rs, ns, name, active, len(active) - want, error, now)
    min_ready = apps.min_ready_s(rs)
    later = [
        t
        for p in active
        if not p.available(min_ready, now) and (t := p.available_at(min_ready)) is not None
    ]
    return min(later) if later else None


def _create(view: View, rs: Obj, count: int, pods: list[PodInfo], now: float) -> str:
    """Create ``count`` pods in slow-start batches; the first refusal, or ""."""
    ns, name = ns_name(rs)
    adm = namespace_admission(view, ns, [p for p in pods if ns_name(p.obj)[0] == ns], now)
    batch, left = 1, count
    while left > 0:
        size = min(batch, left, MAX_BATCH)
        writes: list[tuple[str, Obj | None, int | None]] = []
        error = ""
        for _ in range(size):
            pod = _from_template(rs, now)
            try:
                pod = _admit(pod, adm, f"{name}-", now)
            except admission.Forbidden as exc:
                error = str(exc)
                break
            writes.append((view.key("pods", ns, pod["metadata"]["name"]), pod, 0))
        if writes:
            writes += _quota_writes(adm)
            if not view.commit(writes):
                return ""  # something changed under us (a quota, a name): next pass
            made = [str(w[0]).rsplit("/", 1)[-1] for w in writes if "/pods/" in str(w[0])]
            log.info("replicaset %s/%s: created %s", ns, name, ", ".join(made))
        if error:
            log.warning("replicaset %s/%s: FailedCreate: %s", ns, name, error)
            return error
        left -= size
        batch *= 2
    return ""


def _from_template(rs: Obj, now: float) -> Obj:
    """``GetPodFromTemplate``: labels, annotations and spec of the template, owned by rs."""
    ns, name = ns_name(rs)
    template = (rs.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    pod_meta: Obj = {
        "name": f"{name}-{common.random_suffix()}",
        "generateName": f"{name}-",
        "namespace": ns,
        "ownerReferences": [common.controller_ref(rs, "ReplicaSet", "apps/v1")],
    }
    if tmeta.get("labels"):
        pod_meta["labels"] = dict(tmeta["labels"])
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
                "spec": dict(template.get("spec") or {})}  # fmt: skip
    common.new_identity(pod, now)
    pod["metadata"].pop("generation", None)
    return pod


def _admit(pod: Obj, adm: Namespace, display: str, now: float) -> Obj:
    pod = admission.admit_pod(pod, adm.limitranges, display)
    problems = admission.request_problems(pod)
    if problems:
        i, message = problems[0]
        raise admission.Forbidden(
            f'Pod "{display}" is invalid: spec.containers[{i}].resources.requests: {message}'
        )
    quotas = [(n, h, u) for n, h, u, _, _ in adm.quotas]
    updated = admission.admit_quota("pods", pod, display, quotas, now)
    adm.quotas = [(n, h, updated.get(n, u), k, r) for n, h, u, k, r in adm.quotas]
    adm.dirty |= set(updated)
    return pod


def _quota_writes(adm: Namespace) -> list[tuple[str, Obj | None, int | None]]:
    out: list[tuple[str, Obj | None, int | None]] = []
    for name, hard, used, key, rev in adm.quotas:
        if name in adm.dirty:
            status = {"hard": dict(sorted(hard.items())),
                      "used": {k: str(used[k]) for k in sorted(used)}}  # fmt: skip
            out.append((key, status, rev))
    adm.dirty.clear()
    return out


def rank_for_deletion(candidates: list[PodInfo], siblings: list[PodInfo]) -> list[PodInfo]:
    """Pods in the order they should go (``ActivePodsWithRanks``)."""
    on_node = Counter(p.node for p in siblings if p.ready and p.node)
    phase = {"Pending": 0, "Unknown": 1, "Running": 2}

    def key(p: PodInfo) -> tuple[Any, ...]:
        ready_since = p.ready_since if p.ready else None
        return (
            bool(p.node),
            phase.get(p.phase, 1),
            p.ready,
            -on_node.get(p.node, 0),
            -(ready_since or 0.0) if p.ready else 0.0,
            -p.restarts,
            -p.created,
        )

    return sorted(candidates, key=key)


def _delete(view: View, mine: list[PodInfo], active: list[PodInfo], count: int, now: float) -> str:
    for pod in rank_for_deletion(active, mine)[:count]:
        if not common.delete_pod(view, pod, now):
            return f'Error deleting: pods "{pod.name}": the object changed; will retry'
        log.info("replicaset: deleting pod %s", pod.name)
    return ""


def _write_status(
    view: View,
    rs: Obj,
    ns: str,
    name: str,
    active: list[PodInfo],
    diff: int,
    error: str,
    now: float,
) -> None:
    key = view.key("replicasetstatus", ns, name)
    old_rec = view.get(key)
    old = old_rec.obj if old_rec else {}
    template = (rs.get("spec") or {}).get("template") or {}
    wanted = {"matchLabels": (template.get("metadata") or {}).get("labels") or {}}
    min_ready = apps.min_ready_s(rs)
    status: Obj = {
        "replicas": len(active),
        "fullyLabeledReplicas": sum(
            1 for p in active if labels.matches(wanted, meta(p.obj).get("labels"))
        ),
        "readyReplicas": sum(1 for p in active if p.ready),
        "availableReplicas": sum(1 for p in active if p.available(min_ready, now)),
        "observedGeneration": int(meta(rs).get("generation") or 1),
        "conditions": [c for c in old.get("conditions") or []],
    }  # fmt: skip
    failed = deployutil.condition(status, "ReplicaFailure")
    if error and failed is None:
        reason = "FailedCreate" if diff < 0 else "FailedDelete"
        stamp = deployutil.rfc3339(now)
        cond = {"type": "ReplicaFailure", "status": "True", "lastTransitionTime": stamp,
                "reason": reason, "message": error}  # fmt: skip
        status["conditions"].append(cond)
    elif not error and failed is not None:
        deployutil.remove_condition(status, "ReplicaFailure")
    if not status["conditions"]:
        del status["conditions"]
    if status != old:
        view.put(key, status, old_rec.rev if old_rec else 0)
