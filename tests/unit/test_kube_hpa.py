"""The HPA algorithm against Kubernetes' documented rules (golden cases)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.kube import horizontal
from harness.kube.hpacalc import Config, HPAError, HPAState, PodView, Sample, resource_replicas

NOW = 1_700_000_000.0
CFG = Config()
TOL = (0.1, 0.1)


def pod(
    name: str, phase: str = "Running", request: int | None = 100, ready: str = "True"
) -> PodView:
    # started and Ready long ago: past the CPU initialization period
    return PodView(name, phase, ready=ready, ready_since=NOW - 1000, start_time=NOW - 1000,
                   requests={"cpu": request})  # fmt: skip


def usage(**milli: int) -> dict[str, Sample]:
    return {n: Sample(v, NOW - 1, 15.0) for n, v in milli.items()}


def test_fast_path_is_ceil_of_ratio_times_ready_pods() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    got = resource_replicas(3, 50, "cpu", pods, usage(a=150, b=150, c=150), CFG, NOW, TOL)
    assert got == (9, 150, 150)  # 150 % of request against 50 % → 3.0 × 3


def test_within_tolerance_nothing_changes() -> None:
    pods = [pod("a"), pod("b")]
    assert resource_replicas(2, 50, "cpu", pods, usage(a=52, b=52), CFG, NOW, TOL)[0] == 2
    assert resource_replicas(2, 50, "cpu", pods, usage(a=56, b=56), CFG, NOW, TOL)[0] == 3


def test_utilization_is_a_ratio_of_sums() -> None:
    pods = [pod("a", request=100), pod("b", request=400)]
    _, util, raw = resource_replicas(2, 40, "cpu", pods, usage(a=200, b=0), CFG, NOW, TOL)
    assert (util, raw) == (40, 100)  # 200m of 500m requested, not mean(200 %, 0 %)


def test_missing_metrics_count_as_full_request_on_a_scale_down() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    # a and b at 10 %; c has no sample: counted at 100 % → 40 % of a 50 % target
    got = resource_replicas(3, 50, "cpu", pods, usage(a=10, b=10), CFG, NOW, TOL)[0]
    assert got == 3  # ceil(0.8 × 3) = 3: the missing pod keeps the size


def test_unready_pods_count_as_idle_on_a_scale_up_and_a_flip_means_no_change() -> None:
    pods = [pod("a"), pod("b", "Pending"), pod("c", "Pending"), pod("d", "Pending")]
    # a alone at 200 % of a 100 % target; with the three pending pods at 0 % the ratio
    # falls to 0.5: the direction flips, so the HPA keeps 4
    assert resource_replicas(4, 100, "cpu", pods, usage(a=200), CFG, NOW, TOL)[0] == 4


def test_a_container_without_request_is_an_error() -> None:
    with pytest.raises(HPAError, match="missing request for cpu"):
        resource_replicas(1, 50, "cpu", [pod("a", request=None)], usage(a=10), CFG, NOW, TOL)


def hpa(behavior: dict[str, Any] | None = None, lo: int = 1, hi: int = 20) -> dict[str, Any]:
    target = {"type": "Utilization", "averageUtilization": 50}
    spec: dict[str, Any] = {
        "scaleTargetRef": {"kind": "Deployment", "name": "web"},
        "minReplicas": lo,
        "maxReplicas": hi,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
    }
    if behavior is not None:
        spec["behavior"] = behavior
    return {"metadata": {"name": "web"}, "spec": spec}


def reasons(d: horizontal.Decision) -> dict[str, str]:
    return {c["type"]: c["reason"] for c in d.conditions}


def test_legacy_scale_up_limit_is_twice_or_four() -> None:
    pods = [pod("a"), pod("b")]
    d = horizontal.reconcile(hpa(), 2, pods, {"cpu": usage(a=500, b=500)}, HPAState(), CFG, NOW)
    assert d.desired == 4 and d.rescale  # wants 20, max(2 × 2, 4) = 4
    assert reasons(d)["ScalingLimited"] == "ScaleUpLimit"
    why = "cpu resource utilization (percentage of request) above target"
    assert d.event == ("Normal", "SuccessfulRescale", f"New size: 4; reason: {why}")


def test_legacy_downscale_waits_out_the_stabilization_window() -> None:
    pods = [pod("a"), pod("b"), pod("c"), pod("d")]
    state = HPAState(recommendations=[[NOW - 100, 4]])
    d = horizontal.reconcile(hpa(), 4, pods, {"cpu": usage(a=5, b=5, c=5, d=5)}, state, CFG, NOW)
    assert (d.desired, d.rescale) == (4, False)
    assert reasons(d)["AbleToScale"] == "ScaleDownStabilized"
    # 301 s later the high recommendation has left the 300 s window
    state = HPAState(recommendations=[[NOW - 301, 4]])
    d = horizontal.reconcile(hpa(), 4, pods, {"cpu": usage(a=5, b=5, c=5, d=5)}, state, CFG, NOW)
    assert (d.desired, d.reason) == (1, "All metrics below target")


def test_behavior_default_scale_up_policy_is_max_of_4_pods_and_100_percent() -> None:
    pods = [pod(n) for n in "abcdef"]
    samples = {"cpu": usage(**dict.fromkeys("abcdef", 1000))}
    d = horizontal.reconcile(hpa({}), 6, pods, samples, HPAState(), CFG, NOW)
    assert d.desired == 12  # wants 20 (max); 100 % of 6 beats 4 pods
    assert reasons(d)["ScalingLimited"] == "ScaleUpLimit"
    # a second step inside the same 15 s period may not add more
    state = HPAState(scale_up=[[NOW - 5, 6, 0]], recommendations=[[NOW - 5, 20]])
    d = horizontal.reconcile(hpa({}), 12, pods, samples, state, CFG, NOW)
    assert (d.desired, d.rescale) == (12, False)


def test_behavior_scale_down_window_and_percent_policy() -> None:
    half = {"type": "Percent", "value": 50, "periodSeconds": 15}
    rules = {"scaleDown": {"stabilizationWindowSeconds": 60, "policies": [half]}}
    pods = [pod(n) for n in "abcdefgh"]
    idle = {"cpu": usage(**dict.fromkeys("abcdefgh", 1))}
    state = HPAState(recommendations=[[NOW - 30, 8]])
    d = horizontal.reconcile(hpa(rules), 8, pods, idle, state, CFG, NOW)
    assert (d.desired, reasons(d)["AbleToScale"]) == (8, "ScaleDownStabilized")
    state = HPAState(recommendations=[[NOW - 61, 8]])
    d = horizontal.reconcile(hpa(rules), 8, pods, idle, state, CFG, NOW)
    assert (d.desired, reasons(d)["ScalingLimited"]) == (4, "ScaleDownLimit")  # 50 % per 15 s


def test_no_metrics_means_no_scaling_and_says_why() -> None:
    d = horizontal.reconcile(hpa(), 2, [pod("a"), pod("b")], {}, HPAState(), CFG, NOW)
    assert not d.rescale and d.event and d.event[1] == "FailedComputeMetricsReplicas"
    active = next(c for c in d.conditions if c["type"] == "ScalingActive")
    assert active["reason"] == "FailedGetResourceMetric"
    assert "no metrics returned from resource metrics API" in active["message"]


def test_bounds_and_a_target_scaled_to_zero() -> None:
    d = horizontal.reconcile(hpa(lo=3), 1, [pod("a")], {}, HPAState(), CFG, NOW)
    assert (d.desired, d.reason) == (3, "Current number of replicas below Spec.MinReplicas")
    d = horizontal.reconcile(hpa(), 0, [], {}, HPAState(), CFG, NOW)
    assert not d.rescale and reasons(d)["ScalingActive"] == "ScalingDisabled"
