"""HorizontalPodAutoscaler, autoscaling/v2 (and the v1 form, stored as v2).

The apiserver stores every HPA in one version and serves the others by
conversion; podlab stores v2: an autoscaling/v1 manifest
(``targetCPUUtilizationPercentage``) becomes the v2 object with one CPU
``Utilization`` metric (``storage_form``). Metric sources podlab measures:
``Resource`` and ``ContainerResource`` for ``cpu`` and ``memory`` (from the
node agents' cgroup readings, what metrics-server serves); ``Pods``,
``Object`` and ``External`` need a custom-metrics adapter podlab does not have
and are refused at apply, naming the field.

Defaults are Kubernetes' (``SetDefaults_HorizontalPodAutoscaler``): minReplicas
1, one CPU metric at 80 % when none is given, and, only when ``behavior`` is
given, its missing parts from the default rules (scale up: no window,
max(4 pods, 100 %) per 15 s; scale down: the controller's window, 100 % per 15 s).
"""

from __future__ import annotations

from typing import Any, Literal

from harness.kube import fielderr
from harness.kube.fielderr import Finding, Path
from harness.kube.fields import ApiObject, Strict
from harness.kube.quantity import Quantity
from harness.kube.resources import QuantityText, container_resource_problem

API_V2 = "autoscaling/v2"
API_V1 = "autoscaling/v1"
DEFAULT_CPU_UTILIZATION = 80
MAX_STABILIZATION_WINDOW_S = 3600
MAX_PERIOD_S = 1800
SCALE_TARGETS = ("Deployment", "ReplicaSet")
METRIC_RESOURCES = ("cpu", "memory")

SCALE_UP_DEFAULT: dict[str, Any] = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
SCALE_DOWN_DEFAULT: dict[str, Any] = {
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


class CrossVersionObjectReference(Strict):
    apiVersion: str | None = None
    kind: str = ""
    name: str = ""


class MetricTarget(Strict):
    type: str
    averageUtilization: int | None = None
    averageValue: QuantityText | None = None
    value: QuantityText | None = None


class ResourceMetricSource(Strict):
    name: str = ""
    target: MetricTarget


class ContainerResourceMetricSource(Strict):
    name: str = ""
    container: str = ""
    target: MetricTarget


class MetricSpec(Strict):
    type: Literal["Resource", "ContainerResource", "Pods", "Object", "External"]
    resource: ResourceMetricSource | None = None
    containerResource: ContainerResourceMetricSource | None = None
    # accepted so that the refusal can name them (no custom-metrics adapter here)
    pods: dict[str, Any] | None = None
    object: dict[str, Any] | None = None
    external: dict[str, Any] | None = None


class HPAScalingPolicy(Strict):
    type: str
    value: int
    periodSeconds: int


class HPAScalingRules(Strict):
    stabilizationWindowSeconds: int | None = None
    selectPolicy: str | None = None
    policies: list[HPAScalingPolicy] | None = None
    tolerance: QuantityText | None = None


class HorizontalPodAutoscalerBehavior(Strict):
    scaleUp: HPAScalingRules | None = None
    scaleDown: HPAScalingRules | None = None


class HorizontalPodAutoscalerSpec(Strict):
    scaleTargetRef: CrossVersionObjectReference
    minReplicas: int | None = None
    maxReplicas: int
    metrics: list[MetricSpec] | None = None
    behavior: HorizontalPodAutoscalerBehavior | None = None


class HorizontalPodAutoscaler(ApiObject):
    kind: Literal["HorizontalPodAutoscaler"]
    spec: HorizontalPodAutoscalerSpec


class HorizontalPodAutoscalerSpecV1(Strict):
    scaleTargetRef: CrossVersionObjectReference
    minReplicas: int | None = None
    maxReplicas: int
    targetCPUUtilizationPercentage: int | None = None


class HorizontalPodAutoscalerV1(ApiObject):
    """The autoscaling/v1 form; ``storage_form`` converts it as the apiserver does."""

    kind: Literal["HorizontalPodAutoscaler"]
    spec: HorizontalPodAutoscalerSpecV1

    def storage_form(self) -> HorizontalPodAutoscaler:
        spec = self.spec
        metrics = None
        if spec.targetCPUUtilizationPercentage is not None:
            target = MetricTarget(
                type="Utilization", averageUtilization=spec.targetCPUUtilizationPercentage
            )
            source = ResourceMetricSource(name="cpu", target=target)
            metrics = [MetricSpec(type="Resource", resource=source)]
        return HorizontalPodAutoscaler(
            apiVersion=API_V2,
            kind="HorizontalPodAutoscaler",
            metadata=self.metadata,
            spec=HorizontalPodAutoscalerSpec(
                scaleTargetRef=spec.scaleTargetRef,
                minReplicas=spec.minReplicas,
                maxReplicas=spec.maxReplicas,
                metrics=metrics,
            ),
        )


# -- validation ---------------------------------------------------------------------------
def checks(obj: HorizontalPodAutoscaler | HorizontalPodAutoscalerV1) -> list[Finding]:
    """``validateHorizontalPodAutoscalerSpec`` (v2 rules; v1's one field too)."""
    spec = obj.spec
    out: list[Finding] = []
    if spec.minReplicas is not None and spec.minReplicas < 1:
        msg = fielderr.invalid(spec.minReplicas, "must be greater than or equal to 1")
        out.append((("spec", "minReplicas"), msg, "use 1 or more"))
    if spec.maxReplicas < 1:
        msg = fielderr.invalid(spec.maxReplicas, "must be greater than 0")
        out.append((("spec", "maxReplicas"), msg, "use 1 or more"))
    if spec.minReplicas is not None and spec.maxReplicas < spec.minReplicas:
        msg = fielderr.invalid(spec.maxReplicas, "must be greater than or equal to `minReplicas`")
        out.append((("spec", "maxReplicas"), msg, "raise maxReplicas or lower minReplicas"))
    ref_errors = _target_ref(spec.scaleTargetRef)
    out += ref_errors
    if ref_errors:
        return out
    if isinstance(obj, HorizontalPodAutoscalerV1):
        pct = obj.spec.targetCPUUtilizationPercentage
        if pct is not None and pct < 1:
            msg = fielderr.invalid(pct, "must be greater than 0")
            out.append((("spec", "targetCPUUtilizationPercentage"), msg, "use e.g. 50"))
        return out
    for i, metric in enumerate(obj.spec.metrics or []):
        out += _metric(metric, ("spec", "metrics", i))
    if obj.spec.behavior is not None:
        for field in ("scaleUp", "scaleDown"):
            rules = getattr(obj.spec.behavior, field)
            if rules is not None:
                out += _rules(rules, ("spec", "behavior", field))
    return out


def _target_ref(ref: CrossVersionObjectReference) -> list[Finding]:
    where: Path = ("spec", "scaleTargetRef")
    out: list[Finding] = []
    if not ref.kind:
        out.append(((*where, "kind"), fielderr.required(), "add kind: Deployment"))
    elif ref.kind not in SCALE_TARGETS:
        msg = fielderr.not_supported(ref.kind, list(SCALE_TARGETS))
        out.append(((*where, "kind"), msg, "podlab scales Deployments and ReplicaSets"))
    if not ref.name:
        out.append(((*where, "name"), fielderr.required(), "name the Deployment to scale"))
    return out


def _metric(metric: MetricSpec, where: Path) -> list[Finding]:
    if metric.type not in ("Resource", "ContainerResource"):
        return [
            (
                (*where, "type"),
                f"podlab has no {metric.type} metrics (no custom-metrics adapter)",
                "use type: Resource with cpu or memory",
            )
        ]
    field = "resource" if metric.type == "Resource" else "containerResource"
    source = getattr(metric, field)
    if source is None:
        hint = f"add {field}: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}"
        msg = fielderr.required(f"must populate information for {field}")
        return [((*where, field), msg, hint)]
    out: list[Finding] = []
    spath: Path = (*where, field)
    if not source.name:
        out.append(((*spath, "name"), fielderr.required("must specify a resource name"), ""))
    elif (problem := container_resource_problem(source.name)) is not None:
        out.append(((*spath, "name"), problem, "use cpu or memory"))
    elif source.name not in METRIC_RESOURCES:
        msg = f"podlab measures cpu and memory, not {source.name}"
        out.append(((*spath, "name"), msg, "use cpu or memory"))
    if isinstance(source, ContainerResourceMetricSource) and not source.container:
        out.append(((*spath, "container"), fielderr.required("must specify a container"), ""))
    out += _target(source.target, (*spath, "target"))
    return out


def _target(t: MetricTarget, where: Path) -> list[Finding]:
    out: list[Finding] = []
    if t.type not in ("Utilization", "Value", "AverageValue"):
        msg = fielderr.invalid(t.type, "must be either Utilization, Value, or AverageValue")
        out.append(((*where, "type"), msg, "use Utilization or AverageValue"))
    for field in ("value", "averageValue"):
        text = getattr(t, field)
        if text is not None and Quantity.parse(text).value <= 0:
            out.append(((*where, field), fielderr.invalid(text, "must be positive"), ""))
    if t.averageUtilization is not None and t.averageUtilization < 1:
        msg = fielderr.invalid(t.averageUtilization, "must be greater than 0")
        out.append(((*where, "averageUtilization"), msg, "use e.g. 50"))
    if t.averageUtilization is None and t.averageValue is None:
        msg = fielderr.required("must set either a target raw value or a target utilization")
        out.append(((*where, "averageUtilization"), msg, "add averageUtilization: 50"))
    if t.averageUtilization is not None and t.averageValue is not None:
        msg = fielderr.forbidden("may not set both a target raw value and a target utilization")
        out.append(((*where, "averageValue"), msg, "keep one of them"))
    return out


def _rules(rules: HPAScalingRules, where: Path) -> list[Finding]:
    out: list[Finding] = []
    window = rules.stabilizationWindowSeconds
    if window is not None and window < 0:
        msg = fielderr.invalid(window, "must be greater than or equal to zero")
        out.append(((*where, "stabilizationWindowSeconds"), msg, ""))
    if window is not None and window > MAX_STABILIZATION_WINDOW_S:
        limit = f"must be less than or equal to {MAX_STABILIZATION_WINDOW_S}"
        msg = fielderr.invalid(window, limit)
        out.append(((*where, "stabilizationWindowSeconds"), msg, ""))
    if rules.selectPolicy is not None and rules.selectPolicy not in ("Max", "Min", "Disabled"):
        msg = fielderr.not_supported(rules.selectPolicy, ["Disabled", "Max", "Min"])
        out.append(((*where, "selectPolicy"), msg, ""))
    if rules.policies is not None and not rules.policies:
        msg = fielderr.required("must specify at least one Policy")
        out.append(((*where, "policies"), msg, "add a policy or drop policies: []"))
    for i, p in enumerate(rules.policies or []):
        ppath: Path = (*where, "policies", i)
        if p.type not in ("Pods", "Percent"):
            msg = fielderr.invalid(p.value, "must be either Pods or Percent")
            out.append(((*ppath, "type"), msg, ""))
        if p.value <= 0:
            msg = fielderr.invalid(p.value, "must be greater than zero")
            out.append(((*ppath, "value"), msg, ""))
        if p.periodSeconds <= 0:
            msg = fielderr.invalid(p.periodSeconds, "must be greater than zero")
            out.append(((*ppath, "periodSeconds"), msg, ""))
        if p.periodSeconds > MAX_PERIOD_S:
            msg = fielderr.invalid(p.periodSeconds, f"must be less than or equal to {MAX_PERIOD_S}")
            out.append(((*ppath, "periodSeconds"), msg, ""))
    if rules.tolerance is not None and Quantity.parse(rules.tolerance).value < 0:
        msg = fielderr.invalid(rules.tolerance, "must be greater than or equal to 0")
        out.append(((*where, "tolerance"), msg, ""))
    return out


# -- effective values -----------------------------------------------------------------------
def min_replicas(hpa: dict[str, Any]) -> int:
    value = (hpa.get("spec") or {}).get("minReplicas")
    return 1 if value is None else int(value)


def metrics(hpa: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics, or the default: CPU at 80 % utilization."""
    given = (hpa.get("spec") or {}).get("metrics")
    if given:
        return list(given)
    target = {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}
    return [{"type": "Resource", "resource": {"name": "cpu", "target": target}}]


def behavior(hpa: dict[str, Any]) -> dict[str, Any] | None:
    """``behavior`` with its missing parts defaulted; None when none was given (the
    controller then uses its legacy rules: the downscale window and max(2×, 4))."""
    given = (hpa.get("spec") or {}).get("behavior")
    if given is None:
        return None
    out: dict[str, Any] = {}
    for field, default in (("scaleUp", SCALE_UP_DEFAULT), ("scaleDown", SCALE_DOWN_DEFAULT)):
        rules = dict(given.get(field) or {})
        for key, value in default.items():
            if rules.get(key) is None:
                rules[key] = value
        out[field] = rules
    return out


def target_text(hpa: dict[str, Any]) -> str:
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def cpu_hpa_manifest(
    name: str,
    namespace: str | None,
    min_replicas: int,
    max_replicas: int,
    utilization: int,
    scale_down_window_s: int | None = None,
) -> dict[str, Any]:
    """An autoscaling/v2 HPA on the Deployment ``name``, by CPU utilization (the form
    suites, tests and benches apply); no namespace = the one ``apply`` is given."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    target = {"type": "Utilization", "averageUtilization": utilization}
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
    }
    if scale_down_window_s is not None:
        spec["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": scale_down_window_s}}
    return {"apiVersion": API_V2, "kind": "HorizontalPodAutoscaler", "metadata": metadata,
            "spec": spec}  # fmt: skip
