"""The Deployment controller (``syncDeployment``), over harness.kube.deployutil.

Per Deployment, in Kubernetes' order: paused → only scale; a scaling event (an
active ReplicaSet's desired-replicas annotation differs from spec.replicas) →
proportional scale; else the strategy: RollingUpdate grows the new ReplicaSet
within maxSurge, then shrinks old ones within maxUnavailable, one step per
pass; Recreate scales every old set to 0, waits until none of their pods runs,
then creates the new one at full size. A complete rollout trims old sets
beyond ``revisionHistoryLimit``. The new ReplicaSet is
``<deployment>-<pod-template-hash>``, its template the Deployment's plus the
``pod-template-hash`` label (also in its selector), revision ``max + 1``
(a rolled-back template bumps its old set's revision and records the old one
in ``revision-history``). Status goes to ``deploymentstatus/<ns>/<name>`` with
Kubernetes' conditions.
"""

from __future__ import annotations

import copy
from typing import Any

from harness.controllers import common
from harness.controllers.common import log, meta, ns_name
from harness.controllers.view import Record, View
from harness.kube import apps, deployutil

Obj = dict[str, Any]
Writes = list[tuple[str, Obj | None, int | None]]


def _with_status(view: View, rec: Record, folder: str) -> Obj:
    ns, name = ns_name(rec.obj)
    st = view.get(view.key(folder, ns, name))
    return {**rec.obj, "status": st.obj if st else {}}


def owned_sets(view: View, d: Obj) -> list[tuple[Record, Obj]]:
    ns = ns_name(d)[0]
    out = []
    for rec in view.records("replicasets", ns):
        if common.owned_by(rec.obj, d):
            out.append((rec, _with_status(view, rec, "replicasetstatus")))
    return out


def sync(view: View, d_rec: Record, now: float) -> float | None:
    """One Deployment; returns when it wants another look (its progress deadline)."""
    d = _with_status(view, d_rec, "deploymentstatus")
    if meta(d).get("deletionTimestamp"):
        return None
    sets = owned_sets(view, d)
    records = {deployutil.name(obj): rec for rec, obj in sets}
    rss = [obj for _, obj in sets]
    st = copy.deepcopy(d["status"])
    _paused_condition(d, st, now)
    d_now = {**d, "status": st}
    new = deployutil.find_new_rs(d_now, rss)
    olds = [rs for rs in rss if rs is not new]
    if (d.get("spec") or {}).get("paused") or deployutil.is_scaling_event(d_now, rss):
        _apply_sizes(view, d_now, records, deployutil.proportional_sizes(d_now, new, olds))
    elif apps.strategy_type(d) == "Recreate":
        new = _recreate(view, d_now, records, new, olds, now)
    else:
        new = _rolling(view, d_now, records, new, olds, now)
    # re-read after this pass's writes, then the status
    sets = owned_sets(view, d)
    rss = [obj for _, obj in sets]
    new = deployutil.find_new_rs(d_now, rss)
    olds = [rs for rs in rss if rs is not new]
    if deployutil.deployment_complete(d_now, d_now["status"]):
        for rs in deployutil.history_to_clean(d_now, olds):
            rec = records.get(deployutil.name(rs))
            if rec is not None and view.delete(rec.key, rec.rev):
                log.info("deployment %s: removed old replica set %s", _ref(d), deployutil.name(rs))
    _write_status(view, d_now, rss, new, now)
    return deployutil.progress_deadline_at({**d, "status": _status_now(view, d)})


def _ref(d: Obj) -> str:
    return "/".join(ns_name(d))


def _status_now(view: View, d: Obj) -> Obj:
    ns, name = ns_name(d)
    rec = view.get(view.key("deploymentstatus", ns, name))
    return rec.obj if rec else {}


def _paused_condition(d: Obj, st: Obj, now: float) -> None:
    """``checkPausedConditions``: Unknown/DeploymentPaused while paused, and
    DeploymentResumed after, so time spent paused never counts as no progress."""
    cond = deployutil.condition(st, "Progressing")
    if cond is not None and cond.get("reason") == deployutil.TIMED_OUT:
        return
    paused = bool((d.get("spec") or {}).get("paused"))
    marked = cond is not None and cond.get("reason") == deployutil.PAUSED
    if paused and not marked:
        new = deployutil.new_condition(
            "Progressing", "Unknown", deployutil.PAUSED, "Deployment is paused", now
        )
        deployutil.set_condition(st, new)
    elif not paused and marked:
        new = deployutil.new_condition(
            "Progressing", "Unknown", deployutil.RESUMED, "Deployment is resumed", now
        )
        deployutil.set_condition(st, new)


def _apply_sizes(view: View, d: Obj, records: dict[str, Record], sizes: dict[str, int]) -> bool:
    """Scale ReplicaSets (spec.replicas and the desired/max annotations) in one write."""
    writes: Writes = []
    for name, size in sorted(sizes.items()):
        rec = records[name]
        rs = copy.deepcopy(rec.obj)
        rs["spec"]["replicas"] = size
        ann = rs["metadata"].setdefault("annotations", {})
        ann.update({k: v for k, v in deployutil.replica_annotations(d, None).items()
                    if k in (apps.DESIRED_REPLICAS, apps.MAX_REPLICAS)})  # fmt: skip
        rs["metadata"]["generation"] = int(rs["metadata"].get("generation") or 1) + 1
        writes.append((rec.key, rs, rec.rev))
        before = deployutil.spec_replicas(rec.obj)
        verb = "up" if size > before else "down"
        log.info(
            "deployment %s: Scaled %s replica set %s from %d to %d",
            _ref(d),
            verb,
            name,
            before,
            size,
        )
    return bool(writes) and view.commit(writes)


def _new_set(
    view: View, d: Obj, records: dict[str, Record], new: Obj | None, olds: list[Obj], now: float
) -> tuple[Obj | None, bool]:
    """``getNewReplicaSet(create=True)``: sync the existing one's revision and annotations,
    or create it; (the new set, created now)."""
    revision = deployutil.max_revision(olds) + 1
    ns, dname = ns_name(d)
    if new is not None:
        rec = records[deployutil.name(new)]
        rs: Obj = copy.deepcopy(rec.obj)
        ann = rs["metadata"].setdefault("annotations", {})
        changed = False
        if deployutil.revision(new) < revision:
            old_rev = ann.get(apps.REVISION)
            if old_rev:
                history = [h for h in ann.get(apps.REVISION_HISTORY, "").split(",") if h]
                ann[apps.REVISION_HISTORY] = ",".join([*history, old_rev])
            ann[apps.REVISION] = str(revision)
            changed = True
        min_ready = apps.min_ready_s(d)
        if apps.min_ready_s(rs) != min_ready:
            rs["spec"]["minReadySeconds"] = min_ready
            changed = True
        if changed:
            view.put(rec.key, rs, rec.rev)
            records[deployutil.name(new)] = view.get(rec.key) or rec
            return {**rs, "status": new.get("status") or {}}, False
        st = d["status"]
        if deployutil.condition(st, "Progressing") is None:
            msg = f'Found new replica set "{deployutil.name(new)}"'
            cond = deployutil.new_condition(
                "Progressing", "True", deployutil.FOUND_NEW_RS, msg, now
            )
            deployutil.set_condition(st, cond)
        return new, False
    template = copy.deepcopy((d.get("spec") or {}).get("template") or {})
    collisions = d["status"].get("collisionCount")
    h = deployutil.template_hash(template, collisions)
    template.setdefault("metadata", {}).setdefault("labels", {})[apps.POD_TEMPLATE_HASH] = h
    selector = copy.deepcopy((d.get("spec") or {}).get("selector") or {})
    selector.setdefault("matchLabels", {})[apps.POD_TEMPLATE_HASH] = h
    name = f"{dname}-{h}"
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": ns, "labels": template["metadata"]["labels"],
                     "ownerReferences": [common.controller_ref(d, "Deployment", "apps/v1")]},
        "spec": {"replicas": 0, "minReadySeconds": apps.min_ready_s(d), "selector": selector,
                 "template": template},
    }  # fmt: skip
    rs["spec"]["replicas"] = deployutil.new_rs_new_replicas(d, [*olds, rs], rs)
    rs["metadata"]["annotations"] = deployutil.replica_annotations(d, revision)
    common.new_identity(rs, now)
    key = view.key("replicasets", ns, name)
    existing = view.get(key)
    if existing is not None:  # a hash collision: count it and try another name next pass
        if not common.owned_by(existing.obj, d):
            d["status"]["collisionCount"] = int(collisions or 0) + 1
        return None, False
    if not view.put(key, rs, 0):
        return None, False
    log.info("deployment %s: Scaled up replica set %s from 0 to %d", _ref(d), name,
             rs["spec"]["replicas"])  # fmt: skip
    msg = f'Created new replica set "{name}"'
    cond = deployutil.new_condition("Progressing", "True", deployutil.NEW_RS_CREATED, msg, now)
    deployutil.set_condition(d["status"], cond)
    created = view.get(key)
    if created is not None:
        records[name] = created
    return {**rs, "status": {}}, True


def _rolling(
    view: View, d: Obj, records: dict[str, Record], new: Obj | None, olds: list[Obj], now: float
) -> Obj | None:
    """``rolloutRolling``: scale up the new set if we can, else scale old ones down."""
    new, _ = _new_set(view, d, records, new, olds, now)
    if new is None:
        return None
    all_rss = [*olds, new]
    want = apps.replicas(d)
    size = deployutil.spec_replicas(new)
    target = want if size > want else deployutil.new_rs_new_replicas(d, all_rss, new)
    if target != size:
        _apply_sizes(view, d, records, {deployutil.name(new): target})
        return new
    _apply_sizes(view, d, records, deployutil.old_rs_scale_down(d, all_rss, olds, new))
    return new


def _recreate(
    view: View, d: Obj, records: dict[str, Record], new: Obj | None, olds: list[Obj], now: float
) -> Obj | None:
    """``rolloutRecreate``: old sets to 0, wait until their pods are gone, then the new."""
    down = {deployutil.name(rs): 0 for rs in deployutil.active(olds)}
    if down:
        _apply_sizes(view, d, records, down)
        return new
    ns = ns_name(d)[0]
    old_uids = {meta(rs).get("uid") for rs in olds}
    for p in common.pods(view, ns):
        owner = common.controller_of(p.obj)
        if owner and owner.get("uid") in old_uids and not p.terminal:
            return new  # an old pod still runs (or terminates): wait
    new, _ = _new_set(view, d, records, new, olds, now)
    if new is not None and deployutil.spec_replicas(new) != apps.replicas(d):
        _apply_sizes(view, d, records, {deployutil.name(new): apps.replicas(d)})
    return new


def _write_status(view: View, d: Obj, rss: list[Obj], new: Obj | None, now: float) -> None:
    st = deployutil.calculate_status(d, rss, new)
    deployutil.available_condition(d, st, now)
    deployutil.rollout_conditions(d, st, new, rss, now)
    ns, name = ns_name(d)
    key = view.key("deploymentstatus", ns, name)
    old = view.get(key)
    if old is None or old.obj != st:
        view.put(key, st, old.rev if old else 0)
