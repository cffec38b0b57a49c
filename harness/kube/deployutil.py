"""The Deployment controller's arithmetic (Kubernetes' ``deployment/util`` and friends).

Pure functions over stored objects (dicts with ``metadata``, ``spec`` and the
``status`` the controller manager keeps beside them), so every rule can be
tested on its own against Kubernetes' documented examples:

- ``resolve_fenceposts``: maxSurge rounds up, maxUnavailable down, both 0 → 1
  unavailable;
- ``new_rs_new_replicas``: how far the new ReplicaSet may grow now;
- ``old_rs_scale_down``: unhealthy old replicas first, then down to
  ``replicas − maxUnavailable`` available;
- ``proportional_sizes``: a scale during a rollout spreads over the active
  ReplicaSets by size (10 → 15 with surge 3 adds 3 to old and 2 to new);
- ``calculate_status``, ``rollout_conditions``: the status and the
  ``Progressing``/``Available``/``ReplicaFailure`` conditions with Kubernetes'
  reasons and messages;
- ``template_hash``: the ``pod-template-hash`` label (FNV-32a, encoded with
  Kubernetes' SafeEncodeString alphabet; the bytes hashed are podlab's
  canonical JSON of the template, not Go's object dump, so the values differ
  from a real cluster's while having their form).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from harness.kube import apps, intstr

Obj = dict[str, Any]
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

# Progressing / Available reasons (deployment_util.go)
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
FAILED_RS_CREATE = "ReplicaSetCreateError"


# -- time ------------------------------------------------------------------------------------
def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- small accessors -----------------------------------------------------------------------
def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def name(obj: Obj) -> str:
    return str(meta(obj).get("name", ""))


def spec_replicas(rs: Obj) -> int:
    return apps.replicas(rs)


def status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def status_int(obj: Obj, field: str) -> int:
    return int(status(obj).get(field) or 0)


def created(obj: Obj) -> tuple[float, str]:
    """Sort key: creation time, then name (Kubernetes' ByCreationTimestamp)."""
    return (parse_time(meta(obj).get("creationTimestamp")) or 0.0, name(obj))


def revision(rs: Obj) -> int:
    try:
        return int((meta(rs).get("annotations") or {}).get(apps.REVISION, "0"))
    except ValueError:
        return 0


def max_revision(rss: list[Obj]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def replica_count(rss: list[Obj]) -> int:
    """Σ spec.replicas (GetReplicaCountForReplicaSets)."""
    return sum(spec_replicas(rs) for rs in rss)


def actual_count(rss: list[Obj]) -> int:
    return sum(status_int(rs, "replicas") for rs in rss)


def available_count(rss: list[Obj]) -> int:
    return sum(status_int(rs, "availableReplicas") for rs in rss)


def ready_count(rss: list[Obj]) -> int:
    return sum(status_int(rs, "readyReplicas") for rs in rss)


def active(rss: list[Obj]) -> list[Obj]:
    """FilterActiveReplicaSets: those asked to run pods."""
    return [rs for rs in rss if spec_replicas(rs) > 0]


# -- the pod template and its hash ---------------------------------------------------------
def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """apimachinery's ``rand.SafeEncodeString``: no vowels, no look-alikes."""
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in text)


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(8, "little")
    return safe_encode(str(_fnv32a(data)))


def without_hash(template: Obj) -> Obj:
    t = copy.deepcopy(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(apps.POD_TEMPLATE_HASH, None)
        if not labels:
            t["metadata"].pop("labels")
    if isinstance(t.get("metadata"), dict) and not t["metadata"]:
        t.pop("metadata")
    return t


def equal_ignore_hash(a: Obj, b: Obj) -> bool:
    return without_hash(a) == without_hash(b)


def find_new_rs(d: Obj, rss: list[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template is the Deployment's (FindNewReplicaSet)."""
    template = (d.get("spec") or {}).get("template") or {}
    for rs in sorted(rss, key=created):
        if equal_ignore_hash((rs.get("spec") or {}).get("template") or {}, template):
            return rs
    return None


# -- fenceposts -------------------------------------------------------------------------------
def resolve_fenceposts(surge: int | str, unavailable: int | str, desired: int) -> tuple[int, int]:
    """``ResolveFenceposts``: surge rounds up, unavailable down; both 0 → unavailable 1."""
    s = intstr.scaled(surge, desired, True)
    u = intstr.scaled(unavailable, desired, False)
    if s == 0 and u == 0:
        u = 1
    return s, u


def is_rolling(d: Obj) -> bool:
    return apps.strategy_type(d) == "RollingUpdate"


def max_surge(d: Obj) -> int:
    if not is_rolling(d):
        return 0
    surge, unavailable = apps.rolling_params(d)
    return resolve_fenceposts(surge, unavailable, apps.replicas(d))[0]


def max_unavailable(d: Obj) -> int:
    desired = apps.replicas(d)
    if not is_rolling(d) or desired == 0:
        return 0
    surge, unavailable = apps.rolling_params(d)
    return min(resolve_fenceposts(surge, unavailable, desired)[1], desired)


def new_rs_new_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """``NewRSNewReplicas``: the new RS's size this step may reach."""
    desired = apps.replicas(d)
    if not is_rolling(d):
        return desired
    surge = intstr.scaled(apps.rolling_params(d)[0], desired, True)
    current = replica_count(all_rss)
    limit = desired + surge
    if current >= limit:
        return spec_replicas(new_rs)
    up = min(limit - current, desired - spec_replicas(new_rs))
    return spec_replicas(new_rs) + up


def old_rs_scale_down(
    d: Obj, all_rss: list[Obj], old_rss: list[Obj], new_rs: Obj
) -> dict[str, int]:
    """``reconcileOldReplicaSets``: new sizes for old ReplicaSets (name → replicas).

    First unhealthy replicas (spec − available) of old sets, oldest first, within
    ``all − minAvailable − newRS unavailable``; then available ones down to
    ``replicas − maxUnavailable`` available in total.
    """
    olds = active(old_rss)
    if replica_count(olds) == 0:
        return {}
    min_available = apps.replicas(d) - max_unavailable(d)
    new_unavailable = spec_replicas(new_rs) - status_int(new_rs, "availableReplicas")
    max_scaled_down = replica_count(all_rss) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    sizes = {name(rs): spec_replicas(rs) for rs in olds}
    total = 0
    for rs in sorted(olds, key=created):  # cleanupUnhealthyReplicas
        if total >= max_scaled_down:
            break
        unhealthy = sizes[name(rs)] - status_int(rs, "availableReplicas")
        if sizes[name(rs)] == 0 or unhealthy <= 0:
            continue
        down = min(max_scaled_down - total, unhealthy)
        sizes[name(rs)] -= down
        total += down
    # scaleDownOldReplicaSetsForRollingUpdate, over the sizes after the cleanup
    available = status_int(new_rs, "availableReplicas") + sum(
        min(status_int(rs, "availableReplicas"), sizes[name(rs)]) for rs in olds
    )
    if available > min_available:
        budget = available - min_available
        for rs in sorted(olds, key=created):
            if budget <= 0:
                break
            down = min(sizes[name(rs)], budget)
            sizes[name(rs)] -= down
            budget -= down
    return {n: s for n, s in sizes.items() if s != spec_replicas(_by_name(olds, n))}


def _by_name(rss: list[Obj], n: str) -> Obj:
    return next(rs for rs in rss if name(rs) == n)


# -- scaling (sync.go's scale) ----------------------------------------------------------------
def find_active_or_latest(new_rs: Obj | None, olds: list[Obj]) -> Obj | None:
    if new_rs is None and not olds:
        return None
    ordered = sorted(olds, key=created, reverse=True)
    alive = active([*ordered, *([new_rs] if new_rs else [])])
    if not alive:
        return new_rs if new_rs is not None else ordered[0]
    return alive[0] if len(alive) == 1 else None


def desired_annotation(rs: Obj) -> int | None:
    try:
        return int((meta(rs).get("annotations") or {})[apps.DESIRED_REPLICAS])
    except (KeyError, ValueError):
        return None


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    want = apps.replicas(d)
    return (
        spec_replicas(rs) == want
        and desired_annotation(rs) == want
        and status_int(rs, "availableReplicas") == want
    )


def is_scaling_event(d: Obj, rss: list[Obj]) -> bool:
    """An active RS whose desired-replicas annotation differs from spec.replicas."""
    want = apps.replicas(d)
    return any((ann := desired_annotation(rs)) is not None and ann != want for rs in active(rss))


def proportional_sizes(d: Obj, new_rs: Obj | None, olds: list[Obj]) -> dict[str, int]:
    """``scale``: the size of every ReplicaSet after a scaling event (name → replicas)."""
    want = apps.replicas(d)
    target = find_active_or_latest(new_rs, olds)
    if target is not None:
        return {} if spec_replicas(target) == want else {name(target): want}
    if is_saturated(d, new_rs):
        return {name(rs): 0 for rs in active(olds)}
    if not is_rolling(d):
        return {}
    alive = active([*olds, *([new_rs] if new_rs else [])])
    allowed = want + max_surge(d) if want > 0 else 0
    to_add = allowed - replica_count(alive)
    if to_add != 0:  # bigger first; equal sizes: newer first up (BySizeNewer), older down
        alive.sort(key=created, reverse=to_add > 0)
        alive.sort(key=lambda rs: -spec_replicas(rs))  # stable: keeps the age order
    sizes: dict[str, int] = {}
    added = 0
    for rs in alive:
        if to_add != 0:
            part = _proportion(rs, d, to_add, added)
            sizes[name(rs)] = spec_replicas(rs) + part
            added += part
        else:
            sizes[name(rs)] = spec_replicas(rs)
    if alive and to_add != 0:
        first = name(alive[0])
        sizes[first] = max(0, sizes[first] + to_add - added)
    return {n: s for n, s in sizes.items() if s != spec_replicas(_by_name(alive, n))}


def _proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
    """``GetReplicaSetProportion``."""
    if spec_replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def _fraction(rs: Obj, d: Obj) -> int:
    if apps.replicas(d) == 0:
        return -spec_replicas(rs)
    max_now = apps.replicas(d) + max_surge(d)
    try:
        before = int((meta(rs).get("annotations") or {})[apps.MAX_REPLICAS])
    except (KeyError, ValueError):
        before = status_int(d, "replicas")
    if before == 0:
        return 0
    size = spec_replicas(rs) * max_now / before
    return _round_half_away(size) - spec_replicas(rs)


def _round_half_away(x: float) -> int:
    """``integer.RoundToInt32``: halves away from zero (Go's math.Round)."""
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def replica_annotations(d: Obj, new_revision: int | None) -> dict[str, str]:
    """The annotations a Deployment's ReplicaSets carry (revision, desired and max)."""
    out = {
        apps.DESIRED_REPLICAS: str(apps.replicas(d)),
        apps.MAX_REPLICAS: str(apps.replicas(d) + max_surge(d)),
    }
    if new_revision is not None:
        out[apps.REVISION] = str(new_revision)
    cause = (meta(d).get("annotations") or {}).get(apps.CHANGE_CAUSE)
    if cause:
        out[apps.CHANGE_CAUSE] = cause
    return out


def history_to_clean(d: Obj, olds: list[Obj]) -> list[Obj]:
    """Old ReplicaSets beyond ``revisionHistoryLimit`` that may go (cleanupDeployment)."""
    alive = [rs for rs in olds if not meta(rs).get("deletionTimestamp")]
    diff = len(alive) - apps.revision_history_limit(d)
    if diff <= 0:
        return []
    alive.sort(key=lambda rs: (revision(rs), created(rs)))
    out = []
    for rs in alive[:diff]:
        generation = int(meta(rs).get("generation") or 0)
        observed = status_int(rs, "observedGeneration")
        if status_int(rs, "replicas") != 0 or spec_replicas(rs) != 0 or generation > observed:
            continue
        out.append(rs)
    return out


# -- status and conditions --------------------------------------------------------------------
def condition(obj_status: Obj, kind: str) -> Obj | None:
    return next((c for c in obj_status.get("conditions") or [] if c.get("type") == kind), None)


def set_condition(obj_status: Obj, cond: Obj) -> None:
    """``SetDeploymentCondition``: same status and reason → unchanged; same status keeps
    the lastTransitionTime."""
    current = condition(obj_status, cond["type"])
    if current and current["status"] == cond["status"] and current["reason"] == cond["reason"]:
        return
    if current and current["status"] == cond["status"]:
        cond = {**cond, "lastTransitionTime": current.get("lastTransitionTime")}
    remove_condition(obj_status, cond["type"])
    obj_status.setdefault("conditions", []).append(cond)


def remove_condition(obj_status: Obj, kind: str) -> None:
    conds = [c for c in obj_status.get("conditions") or [] if c.get("type") != kind]
    obj_status["conditions"] = conds


def new_condition(kind: str, state: str, reason: str, message: str, now: float) -> Obj:
    stamp = rfc3339(now)
    return {
        "type": kind,
        "status": state,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def calculate_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> Obj:
    """``calculateStatus``: counts from the ReplicaSets and the Available condition."""
    available = available_count(all_rss)
    total = replica_count(all_rss)
    old = status(d)
    out: Obj = {
        "observedGeneration": int(meta(d).get("generation") or 1),
        "replicas": actual_count(all_rss),
        "updatedReplicas": actual_count([new_rs]) if new_rs else 0,
        "readyReplicas": ready_count(all_rss),
        "availableReplicas": available,
        "unavailableReplicas": max(0, total - available),
        "conditions": copy.deepcopy(old.get("conditions") or []),
    }
    if "collisionCount" in old:
        out["collisionCount"] = old["collisionCount"]
    return out


def available_condition(d: Obj, new_status: Obj, now: float) -> None:
    if new_status["availableReplicas"] >= apps.replicas(d) - max_unavailable(d):
        cond = new_condition(
            "Available", "True", MIN_AVAILABLE, "Deployment has minimum availability.", now
        )
    else:
        cond = new_condition(
            "Available",
            "False",
            MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            now,
        )
    set_condition(new_status, cond)


def deployment_complete(d: Obj, st: Obj) -> bool:
    want = apps.replicas(d)
    return (
        st.get("updatedReplicas") == want
        and st.get("replicas") == want
        and st.get("availableReplicas") == want
        and int(st.get("observedGeneration") or 0) >= int(meta(d).get("generation") or 1)
    )


def deployment_progressing(d: Obj, st: Obj) -> bool:
    old = status(d)
    old_olds = int(old.get("replicas") or 0) - int(old.get("updatedReplicas") or 0)
    new_olds = st["replicas"] - st["updatedReplicas"]
    return (
        st["updatedReplicas"] > int(old.get("updatedReplicas") or 0)
        or new_olds < old_olds
        or st["readyReplicas"] > int(old.get("readyReplicas") or 0)
        or st["availableReplicas"] > int(old.get("availableReplicas") or 0)
    )


def deployment_timed_out(d: Obj, st: Obj, now: float) -> bool:
    cond = condition(st, "Progressing")
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and since + apps.progress_deadline_s(d) < now


def rollout_conditions(
    d: Obj, new_status: Obj, new_rs: Obj | None, rss: list[Obj], now: float
) -> None:
    """``syncRolloutStatus``: Progressing (complete, progressing or timed out) and the
    ReplicaFailure copied from the ReplicaSets (the new one's first)."""
    current = condition(status(d), "Progressing")
    rs_name = name(new_rs) if new_rs else ""
    complete_now = (
        new_status["replicas"] == new_status["updatedReplicas"]
        and current is not None
        and current.get("reason") == NEW_RS_AVAILABLE
    )
    if not complete_now:
        if deployment_complete(d, new_status):
            msg = f'ReplicaSet "{rs_name}" has successfully progressed.'
            set_condition(
                new_status, new_condition("Progressing", "True", NEW_RS_AVAILABLE, msg, now)
            )
        elif deployment_progressing(d, new_status):
            msg = f'ReplicaSet "{rs_name}" is progressing.'
            cond = new_condition("Progressing", "True", RS_UPDATED, msg, now)
            if current is not None:
                if current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime")
                remove_condition(new_status, "Progressing")
            new_status.setdefault("conditions", []).append(cond)
        elif deployment_timed_out(d, new_status, now):
            msg = f'ReplicaSet "{rs_name}" has timed out progressing.'
            set_condition(new_status, new_condition("Progressing", "False", TIMED_OUT, msg, now))
    failures = [new_rs] if new_rs is not None else []
    failures += [rs for rs in rss if rs is not new_rs]
    for rs in failures:
        failed = condition(status(rs), "ReplicaFailure")
        if failed is not None:
            copied = {
                "type": "ReplicaFailure",
                "status": failed.get("status", "True"),
                "lastUpdateTime": failed.get("lastTransitionTime"),
                "lastTransitionTime": failed.get("lastTransitionTime"),
                "reason": failed.get("reason", ""),
                "message": failed.get("message", ""),
            }
            set_condition(new_status, copied)
            break
    else:
        remove_condition(new_status, "ReplicaFailure")


def progress_deadline_at(d: Obj) -> float | None:
    """When an unfinished rollout will time out (for the controller's next wake-up)."""
    cond = condition(status(d), "Progressing")
    if cond is None or cond.get("reason") in (NEW_RS_AVAILABLE, TIMED_OUT):
        return None
    since = parse_time(cond.get("lastUpdateTime"))
    return None if since is None else since + apps.progress_deadline_s(d) + 1
