"""ResourceQuota and LimitRange (v1): models, the apiserver's validation, defaults.

A ResourceQuota caps what a namespace may hold (``hard``: object counts such
as ``pods`` or ``count/deployments.apps``, and compute sums such as
``requests.cpu``); a LimitRange gives containers default requests and limits
and bounds them. Both act at admission (``harness.kube.admission``). Quota
``scopes``/``scopeSelector`` are not implemented: refused at apply, naming the
field. LimitRange items get Kubernetes' defaults on read
(``SetDefaults_LimitRangeItem``: default limit ← max, default request ←
default limit, then ← min).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from harness.kube import fielderr
from harness.kube.fielderr import Finding, Path
from harness.kube.fields import ApiObject, Strict
from harness.kube.quantity import Quantity
from harness.kube.resources import QuantityText, ResourceList, container_resource_problem

# IsStandardQuotaResourceName (hugepages via requests.hugepages-<size>)
STANDARD_QUOTA = (
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "resourcequotas",
    "services",
    "replicationcontrollers",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
)
# counted as whole objects: their hard values must be integers
INTEGER_QUOTA = (
    "pods",
    "resourcequotas",
    "services",
    "replicationcontrollers",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
)
LIMIT_TYPES = ("Pod", "Container", "PersistentVolumeClaim")


class ResourceQuotaSpec(Strict):
    hard: dict[str, QuantityText] = Field(default_factory=dict)
    scopes: list[str] | None = None
    scopeSelector: dict[str, Any] | None = None


class ResourceQuota(ApiObject):
    kind: Literal["ResourceQuota"]
    spec: ResourceQuotaSpec = Field(default_factory=ResourceQuotaSpec)


class LimitRangeItem(Strict):
    type: str
    max: ResourceList = Field(default_factory=dict)
    min: ResourceList = Field(default_factory=dict)
    default: ResourceList = Field(default_factory=dict)
    defaultRequest: ResourceList = Field(default_factory=dict)
    maxLimitRequestRatio: ResourceList = Field(default_factory=dict)


class LimitRangeSpec(Strict):
    limits: list[LimitRangeItem]


class LimitRange(ApiObject):
    kind: Literal["LimitRange"]
    spec: LimitRangeSpec


# -- validation ---------------------------------------------------------------------------
def quota_checks(rq: ResourceQuota) -> list[Finding]:
    """``ValidateResourceQuotaSpec``: standard names, non-negative, integers for counts."""
    out: list[Finding] = []
    for name, text in rq.spec.hard.items():
        where: Path = ("spec", "hard", name)
        if "/" not in name and name not in STANDARD_QUOTA and not _hugepages_quota(name):
            hint = "use e.g. pods, requests.cpu, limits.memory or count/deployments.apps"
            msg = fielderr.invalid(name, "must be a standard resource for quota")
            out.append((where, msg, hint))
            continue
        q = Quantity.parse(text)
        if (name in INTEGER_QUOTA or name.startswith("count/")) and q.value.denominator != 1:
            out.append((where, fielderr.invalid(text, "must be an integer"), "count whole objects"))
    for field in ("scopes", "scopeSelector"):
        if getattr(rq.spec, field):
            hint = "podlab's quotas cover the whole namespace: drop it"
            out.append((("spec", field), "quota scopes are not implemented in podlab", hint))
    return out


def _hugepages_quota(name: str) -> bool:
    return name.startswith("requests.hugepages-")


def limitrange_checks(lr: LimitRange) -> list[Finding]:
    """``ValidateLimitRange`` over the defaulted items (as the apiserver validates)."""
    out: list[Finding] = []
    seen: set[str] = set()
    for i, raw in enumerate(lr.spec.limits):
        where: Path = ("spec", "limits", i)
        if raw.type not in LIMIT_TYPES:
            msg = fielderr.not_supported(raw.type, list(LIMIT_TYPES))
            out.append(((*where, "type"), msg, "use Container or Pod"))
            continue
        if raw.type in seen:
            dup = f"Duplicate value: {fielderr.go_value(raw.type)}"
            out.append(((*where, "type"), dup, "merge the items of one type"))
        seen.add(raw.type)
        for field in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            for name in getattr(raw, field):
                problem = container_resource_problem(name)
                if problem and raw.type != "PersistentVolumeClaim":
                    out.append(((*where, field, name), problem, "use cpu or memory"))
        if raw.type == "Pod":
            for field in ("default", "defaultRequest"):
                if getattr(raw, field):
                    msg = fielderr.forbidden("may not be specified when `type` is 'Pod'")
                    out.append(((*where, field), msg, "defaults apply to containers"))
        out += _bounds(defaulted_item(raw.model_dump()), where)
    return out


def _bounds(item: dict[str, Any], where: Path) -> list[Finding]:
    """min ≤ defaultRequest ≤ default ≤ max and ratio ≥ 1, in Kubernetes' words."""
    out: list[Finding] = []
    q = {f: {k: Quantity.parse(v) for k, v in (item.get(f) or {}).items()} for f in _FIELDS}
    names = sorted({k for f in _FIELDS for k in q[f]})
    for k in names:
        mn, mx = q["min"].get(k), q["max"].get(k)
        dflt, dreq = q["default"].get(k), q["defaultRequest"].get(k)
        ratio = q["maxLimitRequestRatio"].get(k)
        if mn is not None and mx is not None and mn > mx:
            out.append(_bad(where, "min", k, mn, f"min value {mn} is greater than max value {mx}"))
        if dreq is not None and mn is not None and mn > dreq:
            msg = f"min value {mn} is greater than default request value {dreq}"
            out.append(_bad(where, "defaultRequest", k, dreq, msg))
        if dreq is not None and mx is not None and dreq > mx:
            msg = f"default request value {dreq} is greater than max value {mx}"
            out.append(_bad(where, "defaultRequest", k, dreq, msg))
        if dreq is not None and dflt is not None and dreq > dflt:
            msg = f"default request value {dreq} is greater than default limit value {dflt}"
            out.append(_bad(where, "defaultRequest", k, dreq, msg))
        if dflt is not None and mn is not None and mn > dflt:
            msg = f"min value {mn} is greater than default value {dflt}"
            out.append(_bad(where, "default", k, mn, msg))
        if dflt is not None and mx is not None and dflt > mx:
            msg = f"default value {dflt} is greater than max value {mx}"
            out.append(_bad(where, "default", k, mx, msg))
        if ratio is not None and ratio.value < 1:
            msg = f"ratio {ratio} is less than 1"
            out.append(_bad(where, "maxLimitRequestRatio", k, ratio, msg))
    return out


_FIELDS = ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")


def _bad(where: Path, field: str, name: str, value: Quantity, detail: str) -> Finding:
    hint = "keep min ≤ defaultRequest ≤ default ≤ max"
    return ((*where, field, name), fielderr.invalid(str(value), detail), hint)


# -- effective values -----------------------------------------------------------------------
def defaulted_item(item: dict[str, Any]) -> dict[str, Any]:
    """``SetDefaults_LimitRangeItem`` for Container items (others unchanged)."""
    out: dict[str, Any] = {f: dict(item.get(f) or {}) for f in _FIELDS}
    out["type"] = item.get("type")
    if item.get("type") == "Container":
        for key, value in out["max"].items():
            out["default"].setdefault(key, value)
        for key, value in out["default"].items():
            out["defaultRequest"].setdefault(key, value)
        for key, value in out["min"].items():
            out["defaultRequest"].setdefault(key, value)
    return out


def limit_items(limitrange: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored LimitRange's items, defaulted."""
    return [defaulted_item(i) for i in (limitrange.get("spec") or {}).get("limits") or []]
