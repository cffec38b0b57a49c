"""The HorizontalPodAutoscaler's algorithm, as kube-controller-manager runs it.

``replica_calculator.go`` (``resource_replicas``, ``raw_resource_replicas``):
utilization is Σ usage × 100 / Σ requests over the pods with metrics, truncated
to an integer percent; the fast path is ``ceil(ratio × ready pods)`` when no pod
is unready or missing a metric; otherwise missing pods count as using their
request (scale down; the target if above 100 %) or nothing (scale up), unready
pods as nothing on a scale up, the ratio is recomputed, and nothing happens if
it is within tolerance or flips direction. CPU samples of pods that are not
Ready, or Ready for less than one metric window in their first
``cpu_initialization_s``, are set aside (``groupPods``).

``horizontal.go`` (``reconcile``): min/max bounds, the max over metrics, and the
stabilization: without ``behavior`` the legacy rules (highest recommendation of
the downscale window; at most max(2 × current, 4)); with it, the up and down
windows and the rate policies over the recorded scale events. The controller's
memory of recommendations and scale events is ``HPAState``, which the
controller manager keeps in etcd so that a restart does not forget the window.
Conditions and event texts are Kubernetes'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0


class HPAError(Exception):
    """A replica count could not be computed; the text is Kubernetes'."""


@dataclass(frozen=True)
class PodView:
    """What the calculator needs of one pod (from its object and its status)."""

    name: str
    phase: str
    deleting: bool = False
    ready: str | None = None  # the Ready condition's status ("True"/"False"), None if absent
    ready_since: float | None = None  # the Ready condition's lastTransitionTime
    start_time: float | None = None
    requests: dict[str, int | None] = field(default_factory=dict)  # resource → milli, None: unset


@dataclass(frozen=True)
class Sample:
    """One pod's usage in milli-units (millicores, or milli-bytes as apimachinery counts)."""

    value: int
    timestamp: float
    window: float


@dataclass(frozen=True)
class Config:
    """kube-controller-manager's ``--horizontal-pod-autoscaler-*`` flags."""

    sync_period_s: float = 15.0
    tolerance: float = 0.1
    downscale_stabilization_s: float = 300.0
    cpu_initialization_s: float = 300.0
    initial_readiness_delay_s: float = 30.0


@dataclass
class HPAState:
    """The controller's memory of one HPA: timestamped recommendations and scale events."""

    recommendations: list[list[float]] = field(default_factory=list)  # [time, replicas]
    scale_up: list[list[float]] = field(default_factory=list)  # [time, change, outdated]
    scale_down: list[list[float]] = field(default_factory=list)

    def to_json(self) -> Obj:
        return {"recommendations": self.recommendations, "scaleUpEvents": self.scale_up,
                "scaleDownEvents": self.scale_down}  # fmt: skip

    @staticmethod
    def from_json(data: Obj | None) -> HPAState:
        data = data or {}
        return HPAState(
            [list(r) for r in data.get("recommendations") or []],
            [list(e) for e in data.get("scaleUpEvents") or []],
            [list(e) for e in data.get("scaleDownEvents") or []],
        )


# -- replica_calculator.go -------------------------------------------------------------------
def _within(ratio: float, down: float, up: float) -> bool:
    return 1.0 - down <= ratio <= 1.0 + up


def group_pods(
    pods: list[PodView], samples: dict[str, Sample], resource: str, cfg: Config, now: float
) -> tuple[int, set[str], set[str], set[str]]:
    """(ready count, unready, missing, ignored) as ``groupPods`` sorts them."""
    ready, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        sample = samples.get(pod.name)
        if sample is None:
            missing.add(pod.name)
            continue
        if resource == "cpu":
            if pod.ready is None or pod.start_time is None or pod.ready_since is None:
                not_ready = True
            elif pod.start_time + cfg.cpu_initialization_s > now:
                not_ready = (
                    pod.ready == "False" or sample.timestamp < pod.ready_since + sample.window
                )
            else:
                not_ready = (
                    pod.ready == "False"
                    and pod.start_time + cfg.initial_readiness_delay_s > pod.ready_since
                )
            if not_ready:
                unready.add(pod.name)
                continue
        ready += 1
    return ready, unready, missing, ignored


def pod_requests(pods: list[PodView], resource: str) -> dict[str, int]:
    out = {}
    for pod in pods:
        value = pod.requests.get(resource)
        if value is None:
            raise HPAError(f"missing request for {resource} in container of Pod {pod.name}")
        out[pod.name] = value
    return out


def utilization_ratio(
    metrics: dict[str, int], requests: dict[str, int], target: int
) -> tuple[float, int, int]:
    """``GetResourceUtilizationRatio``: (ratio, utilization %, average raw usage)."""
    usage = total = entries = 0
    for name, value in metrics.items():
        if name in requests:
            usage += value
            total += requests[name]
            entries += 1
    if total == 0:
        raise HPAError("no metrics returned matched known pods")
    utilization = usage * 100 // total
    return utilization / target, utilization, usage // entries


def resource_replicas(
    current: int,
    target_utilization: int,
    resource: str,
    pods: list[PodView],
    samples: dict[str, Sample],
    cfg: Config,
    now: float,
    tolerances: tuple[float, float],
) -> tuple[int, int, int]:
    """``GetResourceReplicas``: (replicas, utilization %, average raw usage)."""
    if not samples:
        raise HPAError(
            f"unable to get metrics for resource {resource}: "
            "no metrics returned from resource metrics API"
        )
    if not pods:
        raise HPAError("no pods returned by selector while calculating replica count")
    ready, unready, missing, ignored = group_pods(pods, samples, resource, cfg, now)
    metrics = {n: s.value for n, s in samples.items() if n not in ignored and n not in unready}
    metrics = {n: v for n, v in metrics.items() if any(p.name == n for p in pods)}
    if not metrics:
        raise HPAError("did not receive metrics for targeted pods (pods might be unready)")
    requests = pod_requests(pods, resource)
    ratio, utilization, raw = utilization_ratio(metrics, requests, target_utilization)
    down, up = tolerances
    up_with_unready = bool(unready) and ratio > 1.0
    if not up_with_unready and not missing:
        if _within(ratio, down, up):
            return current, utilization, raw
        return math.ceil(ratio * ready), utilization, raw
    if missing:
        if ratio < 1.0:
            fallback = max(100, target_utilization)
            for n in missing:
                metrics[n] = requests[n] * fallback // 100
        elif ratio > 1.0:
            for n in missing:
                metrics[n] = 0
    if up_with_unready:
        for n in unready:
            metrics[n] = 0
    new_ratio = utilization_ratio(metrics, requests, target_utilization)[0]
    return _rebalanced(current, ratio, new_ratio, len(metrics), tolerances), utilization, raw


def raw_resource_replicas(
    current: int,
    target_milli: int,
    resource: str,
    pods: list[PodView],
    samples: dict[str, Sample],
    cfg: Config,
    now: float,
    tolerances: tuple[float, float],
) -> tuple[int, int]:
    """``GetRawResourceReplicas`` (an ``AverageValue`` target): (replicas, usage)."""
    if not samples:
        raise HPAError(
            f"unable to get metrics for resource {resource}: "
            "no metrics returned from resource metrics API"
        )
    if not pods:
        raise HPAError("no pods returned by selector while calculating replica count")
    ready, unready, missing, ignored = group_pods(pods, samples, resource, cfg, now)
    names = {p.name for p in pods}
    metrics = {
        n: s.value
        for n, s in samples.items()
        if n in names and n not in ignored and n not in unready
    }
    if not metrics:
        raise HPAError("did not receive metrics for targeted pods (pods might be unready)")
    usage = sum(metrics.values()) // len(metrics)
    ratio = usage / target_milli
    down, up = tolerances
    up_with_unready = bool(unready) and ratio > 1.0
    if not up_with_unready and not missing:
        if _within(ratio, down, up):
            return current, usage
        return math.ceil(ratio * ready), usage
    for n in missing:
        metrics[n] = target_milli if ratio < 1.0 else 0
    if up_with_unready:
        for n in unready:
            metrics[n] = 0
    new_ratio = (sum(metrics.values()) // len(metrics)) / target_milli
    return _rebalanced(current, ratio, new_ratio, len(metrics), tolerances), usage


def _rebalanced(
    current: int, ratio: float, new_ratio: float, count: int, tolerances: tuple[float, float]
) -> int:
    down, up = tolerances
    if _within(new_ratio, down, up) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    proposed = math.ceil(new_ratio * count)
    if (new_ratio < 1.0 and proposed > current) or (new_ratio > 1.0 and proposed < current):
        return current
    return proposed
