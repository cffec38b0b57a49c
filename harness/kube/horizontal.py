"""One HPA sync (``reconcileAutoscaler``): bounds, metrics, stabilization, rate limits.

Pure: the caller (harness/controllers/hpa.py) reads the target's scale, the
pods and the metric samples from etcd, passes the HPA's remembered
recommendations and scale events (``HPAState``), and writes back what
``reconcile`` decides: the new ``spec.replicas`` of the target when
``rescale``, the HPA's status (conditions with Kubernetes' reasons and
messages, ``currentMetrics``, ``lastScaleTime``) and the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.kube import autoscaling, deployutil
from harness.kube.hpacalc import (
    SCALE_UP_LIMIT_FACTOR,
    SCALE_UP_LIMIT_MINIMUM,
    Config,
    HPAError,
    HPAState,
    PodView,
    Sample,
    raw_resource_replicas,
    resource_replicas,
)
from harness.kube.quantity import Quantity

Obj = dict[str, Any]


@dataclass
class Decision:
    desired: int
    rescale: bool
    reason: str = ""
    conditions: list[Obj] = field(default_factory=list)
    current_metrics: list[Obj] = field(default_factory=list)
    event: tuple[str, str, str] | None = None  # (type, reason, message)


def set_condition(
    conds: list[Obj], kind: str, state: str, reason: str, message: str, now: float
) -> None:
    """``setCondition``: replace the condition of that type; keep the transition time
    when the status did not change."""
    old = next((c for c in conds if c.get("type") == kind), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == state else None
    new = {"type": kind, "status": state, "lastTransitionTime": since or deployutil.rfc3339(now),
           "reason": reason, "message": message}  # fmt: skip
    conds[:] = [c for c in conds if c.get("type") != kind] + [new]


def reconcile(
    hpa: Obj,
    spec_replicas: int,
    pods: list[PodView],
    samples: dict[str, dict[str, Sample]],
    state: HPAState,
    cfg: Config,
    now: float,
) -> Decision:
    """Decide the target's replicas for this sync (``samples``: resource → pod → usage)."""
    conds: list[Obj] = [dict(c) for c in (hpa.get("status") or {}).get("conditions") or []]
    msg = "the HPA controller was able to get the target's current scale"
    set_condition(conds, "AbleToScale", "True", "SucceededGetScale", msg, now)
    current = spec_replicas
    if not state.recommendations:
        state.recommendations.append([now, current])
    lo, hi = autoscaling.min_replicas(hpa), int(hpa["spec"]["maxReplicas"])
    decision = Decision(desired=current, rescale=True, conditions=conds)
    if spec_replicas == 0 and lo != 0:
        decision.desired, decision.rescale = 0, False
        msg = "scaling is disabled since the replica count of the target is zero"
        set_condition(conds, "ScalingActive", "False", "ScalingDisabled", msg, now)
    elif current > hi:
        decision.reason, decision.desired = "Current number of replicas above Spec.MaxReplicas", hi
    elif current < lo:
        decision.reason, decision.desired = "Current number of replicas below Spec.MinReplicas", lo
    else:
        proposal, metric, statuses, error = _metrics(hpa, current, pods, samples, cfg, now, conds)
        decision.current_metrics = statuses
        if error is not None and proposal < 0:
            decision.rescale, decision.desired = False, current
            decision.event = ("Warning", "FailedComputeMetricsReplicas", error)
            return decision
        desired = 0
        rescale_metric = ""
        if proposal > desired:
            desired, rescale_metric = proposal, metric
        if desired > current:
            decision.reason = f"{rescale_metric} above target"
        if desired < current:
            decision.reason = "All metrics below target"
        rules = autoscaling.behavior(hpa)
        if rules is None:
            desired = _normalize_legacy(state, current, desired, lo, hi, cfg, conds, now)
        else:
            desired = _normalize_behaviors(state, rules, current, desired, lo, hi, cfg, conds, now)
        decision.desired = desired
        decision.rescale = desired != current
    if decision.rescale:
        msg = f"the HPA controller was able to update the target scale to {decision.desired}"
        set_condition(conds, "AbleToScale", "True", "SucceededRescale", msg, now)
        text = f"New size: {decision.desired}; reason: {decision.reason}"
        decision.event = ("Normal", "SuccessfulRescale", text)
        _store_scale_event(state, autoscaling.behavior(hpa), current, decision.desired, now)
    else:
        decision.desired = current
    return decision


def _metrics(
    hpa: Obj,
    current: int,
    pods: list[PodView],
    samples: dict[str, dict[str, Sample]],
    cfg: Config,
    now: float,
    conds: list[Obj],
) -> tuple[int, str, list[Obj], str | None]:
    """``computeReplicasForMetrics``: the max proposal over the metrics; (-1, …, error)
    when none could be computed (or some failed and the rest would scale down)."""
    specs = autoscaling.metrics(hpa)
    replicas, metric, statuses = 0, "", []
    invalid, first_error, first_reason = 0, "", ""
    for spec in specs:
        try:
            proposal, name, status = _one_metric(hpa, spec, current, pods, samples, cfg, now)
        except HPAError as exc:
            kind = "Resource" if spec.get("type") == "Resource" else "ContainerResource"
            source = spec.get("resource") or spec.get("containerResource") or {}
            err = f"failed to get {source.get('name', '')} utilization: {exc}"
            if invalid == 0:
                first_error, first_reason = err, f"FailedGet{kind}Metric"
            invalid += 1
            statuses.append({"type": ""})
            continue
        statuses.append(status)
        if replicas == 0 or proposal > replicas:
            replicas, metric = proposal, name
    if invalid >= len(specs) or (invalid > 0 and replicas < current):
        message = f"the HPA was unable to compute the replica count: {first_error}"
        set_condition(conds, "ScalingActive", "False", first_reason, message, now)
        counts = f"{invalid} invalid out of {len(specs)}"
        error = f"invalid metrics ({counts}), first error is: {first_error}"
        return -1, "", statuses, error
    message = f"the HPA was able to successfully calculate a replica count from {metric}"
    set_condition(conds, "ScalingActive", "True", "ValidMetricFound", message, now)
    return replicas, metric, statuses, None


def _tolerances(hpa: Obj, cfg: Config) -> tuple[float, float]:
    """(down, up): the controller's tolerance unless ``behavior`` sets its own."""
    given = (hpa.get("spec") or {}).get("behavior") or {}
    out = []
    for field_ in ("scaleDown", "scaleUp"):
        text = (given.get(field_) or {}).get("tolerance")
        out.append(float(Quantity.parse(text).value) if text is not None else cfg.tolerance)
    return out[0], out[1]


def _one_metric(
    hpa: Obj,
    spec: Obj,
    current: int,
    pods: list[PodView],
    samples: dict[str, dict[str, Sample]],
    cfg: Config,
    now: float,
) -> tuple[int, str, Obj]:
    kind = spec.get("type")
    field_ = "resource" if kind == "Resource" else "containerResource"
    source = spec.get(field_) or {}
    resource, target = str(source.get("name")), source.get("target") or {}
    got = samples.get(resource, {})
    tol = _tolerances(hpa, cfg)
    current_status: Obj = {}
    if target.get("averageValue") is not None:
        milli = Quantity.parse(target["averageValue"]).milli_value()
        replicas, usage = raw_resource_replicas(current, milli, resource, pods, got, cfg, now, tol)
        current_status["averageValue"] = str(Quantity.milli(usage))
        name = f"{resource} resource"
    else:
        pct = int(target.get("averageUtilization") or autoscaling.DEFAULT_CPU_UTILIZATION)
        replicas, util, raw = resource_replicas(current, pct, resource, pods, got, cfg, now, tol)
        current_status = {"averageUtilization": util, "averageValue": str(Quantity.milli(raw))}
        name = f"{resource} resource utilization (percentage of request)"
        if kind == "ContainerResource":
            name = f"{resource} container resource utilization (percentage of request)"
    status: Obj = {"type": kind, field_: {"name": resource, "current": current_status}}
    if kind == "ContainerResource":
        status[field_]["container"] = source.get("container")
    return replicas, name, status


# -- stabilization and rate limits --------------------------------------------------------------
def _normalize_legacy(
    state: HPAState,
    current: int,
    desired: int,
    lo: int,
    hi: int,
    cfg: Config,
    conds: list[Obj],
    now: float,
) -> int:
    """``normalizeDesiredReplicas``: highest recommendation of the downscale window,
    then min/max and the max(2 × current, 4) scale-up limit."""
    stabilized = desired
    cutoff = now - cfg.downscale_stabilization_s
    old = None
    for i, (ts, rec) in enumerate(state.recommendations):
        if ts < cutoff:
            old = i
        elif rec > stabilized:
            stabilized = int(rec)
    if old is not None:
        state.recommendations[old] = [now, desired]
    else:
        state.recommendations.append([now, desired])
    if stabilized != desired:
        msg = _HIGHER
        set_condition(conds, "AbleToScale", "True", "ScaleDownStabilized", msg, now)
    else:
        set_condition(
            conds,
            "AbleToScale",
            "True",
            "ReadyForNewScale",
            "recommended size matches current size",
            now,
        )
    up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if hi > up_limit:
        top, cond, why = up_limit, "ScaleUpLimit", _FASTER
    else:
        top, cond, why = hi, "TooManyReplicas", _MORE
    if stabilized < lo:
        result, cond, why = lo, "TooFewReplicas", _LESS
    elif stabilized > top:
        result = top
    else:
        result, cond, why = stabilized, "DesiredWithinRange", _WITHIN
    set_condition(
        conds, "ScalingLimited", "False" if result == stabilized else "True", cond, why, now
    )
    return result


_HIGHER = (
    "recent recommendations were higher than current one, "
    "applying the highest recent recommendation"
)
_LOWER = (
    "recent recommendations were lower than current one, applying the lowest recent recommendation"
)
_FASTER = "the desired replica count is increasing faster than the maximum scale rate"
_SLOWER = "the desired replica count is decreasing faster than the maximum scale rate"
_MORE = "the desired replica count is more than the maximum replica count"
_LESS = "the desired replica count is less than the minimum replica count"
_WITHIN = "the desired count is within the acceptable range"


def _normalize_behaviors(
    state: HPAState,
    rules: Obj,
    current: int,
    desired: int,
    lo: int,
    hi: int,
    cfg: Config,
    conds: list[Obj],
    now: float,
) -> int:
    """``normalizeDesiredReplicasWithBehaviors``: both windows, then the policies."""
    up_rules, down_rules = rules["scaleUp"], rules["scaleDown"]
    down_window = down_rules.get("stabilizationWindowSeconds")
    if down_window is None:
        down_window = cfg.downscale_stabilization_s
    up_cut = now - float(up_rules.get("stabilizationWindowSeconds") or 0)
    down_cut = now - float(down_window)
    up_rec = down_rec = desired
    old = None
    for i, (ts, rec) in enumerate(state.recommendations):
        if ts > up_cut:
            up_rec = min(int(rec), up_rec)
        if ts > down_cut:
            down_rec = max(int(rec), down_rec)
        if ts < up_cut and ts < down_cut:
            old = i
    stabilized = min(max(current, up_rec), down_rec)
    if old is not None:
        state.recommendations[old] = [now, desired]
    else:
        state.recommendations.append([now, desired])
    if stabilized != desired:
        if desired >= current:
            reason = "ScaleUpStabilized"
            msg = _LOWER
        else:
            reason = "ScaleDownStabilized"
            msg = _HIGHER
        set_condition(conds, "AbleToScale", "True", reason, msg, now)
    else:
        set_condition(
            conds,
            "AbleToScale",
            "True",
            "ReadyForNewScale",
            "recommended size matches current size",
            now,
        )
    result, cond, why = stabilized, "DesiredWithinRange", _WITHIN
    if stabilized > current:
        limit = max(_up_limit(current, state, up_rules, now), current)
        top, c, w = (
            (limit, "ScaleUpLimit", _FASTER) if hi > limit else (hi, "TooManyReplicas", _MORE)
        )
        if stabilized > top:
            result, cond, why = top, c, w
    elif stabilized < current:
        limit = min(_down_limit(current, state, down_rules, now), current)
        bottom, c, w = (
            (limit, "ScaleDownLimit", _SLOWER) if lo < limit else (lo, "TooFewReplicas", _LESS)
        )
        if stabilized < bottom:
            result, cond, why = bottom, c, w
    set_condition(
        conds, "ScalingLimited", "False" if result == stabilized else "True", cond, why, now
    )
    return result


def _changes(events: list[list[float]], period: float, now: float) -> int:
    """``getReplicasChangePerPeriod``."""
    return int(sum(e[1] for e in events if e[0] > now - period))


def _up_limit(current: int, state: HPAState, rules: Obj, now: float) -> int:
    """``calculateScaleUpLimitWithScalingRules``."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    pick = min if select == "Min" else max
    result: int | None = None
    for p in rules.get("policies") or []:
        period = float(p["periodSeconds"])
        start = (
            current
            - _changes(state.scale_up, period, now)
            + _changes(state.scale_down, period, now)
        )
        if p["type"] == "Pods":
            proposed = start + int(p["value"])
        else:
            proposed = math.ceil(start * (1 + int(p["value"]) / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def _down_limit(current: int, state: HPAState, rules: Obj, now: float) -> int:
    """``calculateScaleDownLimitWithBehaviors``."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    pick = max if select == "Min" else min
    result: int | None = None
    for p in rules.get("policies") or []:
        period = float(p["periodSeconds"])
        start = (
            current
            - _changes(state.scale_up, period, now)
            + _changes(state.scale_down, period, now)
        )
        if p["type"] == "Pods":
            proposed = start - int(p["value"])
        else:
            proposed = int(start * (1 - int(p["value"]) / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def _store_scale_event(
    state: HPAState, rules: Obj | None, before: int, after: int, now: float
) -> None:
    """``storeScaleEvent`` (only with ``behavior``): reuse an outdated slot or append."""
    if rules is None:
        return
    up = after > before
    events = state.scale_up if up else state.scale_down
    longest = max((float(p["periodSeconds"]) for p in rules["scaleUp" if up else "scaleDown"]
                   .get("policies") or []), default=0.0)  # fmt: skip
    for e in events:
        if e[0] < now - longest:
            e[2] = 1
    change = after - before if up else before - after
    slot = None
    for i, e in enumerate(events):  # the last outdated slot, as upstream picks it
        if e[2]:
            slot = i
    if slot is not None:
        events[slot] = [now, change, 0]
    else:
        events.append([now, change, 0])
