"""Container ``resources.requests/limits``: validation, defaults, sums, cgroup values.

Kubernetes' rules, in Kubernetes' words:

- a container resource is ``cpu``, ``memory``, ``ephemeral-storage``,
  ``hugepages-<size>`` or an extended ``domain/name``; anything else is
  ``Invalid value: "cpus": must be a standard resource for containers``;
- a request above its limit is ``Invalid value: "700m": must be less than or
  equal to cpu limit of 500m``;
- a limit without a request defaults the request to the limit (the apiserver's
  pod defaulting), so a pod with ``limits.cpu: 1`` requests 1 CPU.

Stored quantities are canonical (``0.5`` becomes ``500m``, ``1024Mi``
becomes ``1Gi``), as the apiserver stores them. The cgroup values are the
kubelet's (``MilliCPUToShares``, ``MilliCPUToQuota``, the shares→weight map of
cgroup v2), so a pod on a podlab node gets what a kubelet would give it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, PlainValidator

from harness.kube import fielderr
from harness.kube.fielderr import Finding, Path
from harness.kube.fields import Strict, _fail
from harness.kube.quantity import Quantity, QuantityError

STANDARD_CONTAINER = ("cpu", "memory", "ephemeral-storage")
_HUGEPAGES = re.compile(r"^hugepages-[0-9]+[KMGTPE]?i?$")
_QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)

# the kubelet's constants (pkg/kubelet/cm/helpers_linux.go)
MIN_SHARES = 2
MAX_SHARES = 262144
SHARES_PER_CPU = 1024
QUOTA_PERIOD_US = 100_000
MIN_QUOTA_PERIOD_US = 1_000


def check_quantity(value: Any) -> str:
    """A manifest quantity → its canonical text; negative or malformed is an error."""
    try:
        q = Quantity.parse(value)
    except QuantityError as exc:
        raise _fail(str(exc), "write e.g. 500m or 0.5 for CPU, 128Mi or 1Gi for memory") from None
    if q.value < 0:
        raise _fail(fielderr.invalid(str(q), "must be greater than or equal to 0"), "use 0 or more")
    return str(q)


QuantityText = Annotated[str, PlainValidator(check_quantity)]
ResourceList = dict[str, QuantityText]


class ResourceRequirements(Strict):
    """``resources``: what the pod asks for (scheduling, quota) and may use (cgroups)."""

    requests: ResourceList = Field(default_factory=dict)
    limits: ResourceList = Field(default_factory=dict)


def container_resource_problem(name: str) -> str | None:
    """Kubernetes' message when ``name`` is no container resource, else None."""
    if "/" in name:
        domain = name.split("/", 1)[0]
        if (
            not _QUALIFIED.match(name)
            or domain == "kubernetes.io"
            or domain.endswith(".kubernetes.io")
        ):
            return fielderr.invalid(name, "must be a standard resource for containers")
        return None
    if name in STANDARD_CONTAINER or _HUGEPAGES.match(name):
        return None
    return fielderr.invalid(name, "must be a standard resource for containers")


def checks(res: ResourceRequirements | None, where: Path) -> list[Finding]:
    """Resource names, and every request at most its limit (after Kubernetes' defaulting)."""
    if res is None:
        return []
    out: list[Finding] = []
    hint = "use cpu, memory or ephemeral-storage (or an extended resource like example.com/gpu)"
    for field in ("requests", "limits"):
        for name in getattr(res, field):
            problem = container_resource_problem(name)
            if problem:
                out.append(((*where, field, name), problem, hint))
    for name, text in res.requests.items():
        limit = res.limits.get(name)
        if limit is not None and Quantity.parse(text) > Quantity.parse(limit):
            msg = fielderr.invalid(text, f"must be less than or equal to {name} limit of {limit}")
            out.append(((*where, "requests"), msg, f"raise limits.{name} or lower requests.{name}"))
    return out


def defaulted(resources: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    """``{requests, limits}`` with every limited resource requested (the apiserver's
    pod defaulting: a limit without a request sets the request to the limit)."""
    resources = resources or {}
    limits = dict(resources.get("limits") or {})
    requests = dict(resources.get("requests") or {})
    for name, value in limits.items():
        requests.setdefault(name, value)
    return {"requests": requests, "limits": limits}


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list((pod.get("spec") or {}).get("containers") or [])


def pod_requests(pod: dict[str, Any]) -> dict[str, Quantity]:
    """Σ requests over the pod's containers, with limits standing in for missing requests."""
    total: dict[str, Quantity] = {}
    for c in containers(pod):
        for name, text in defaulted(c.get("resources"))["requests"].items():
            q = Quantity.parse(text)
            total[name] = total[name] + q if name in total else q
    return total


def pod_limits(pod: dict[str, Any]) -> dict[str, Quantity]:
    """Σ limits over the containers (a resource is limited only if every container limits it)."""
    cs = containers(pod)
    total: dict[str, Quantity] = {}
    for name in {n for c in cs for n in (c.get("resources") or {}).get("limits") or {}}:
        parts = [((c.get("resources") or {}).get("limits") or {}).get(name) for c in cs]
        if all(p is not None for p in parts):
            qs = [Quantity.parse(p) for p in parts]
            acc = qs[0]
            for q in qs[1:]:
                acc = acc + q
            total[name] = acc
    return total


def qos_class(pod: dict[str, Any]) -> str:
    """Kubernetes' QoS class: Guaranteed, Burstable or BestEffort (for cpu and memory)."""
    cs = containers(pod)
    any_set = False
    guaranteed = True
    for c in cs:
        res = defaulted(c.get("resources"))
        for name in ("cpu", "memory"):
            req, lim = res["requests"].get(name), res["limits"].get(name)
            any_set = any_set or req is not None or lim is not None
            if lim is None or req is None or not Quantity.parse(req).same(Quantity.parse(lim)):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


# -- cgroup values (the kubelet's arithmetic) -------------------------------------------
def cpu_shares(request_milli: int | None) -> int:
    """``MilliCPUToShares``: cgroup v1 ``cpu.shares`` for a CPU request (none → 2)."""
    if not request_milli:
        return MIN_SHARES
    shares = request_milli * SHARES_PER_CPU // 1000
    return max(MIN_SHARES, min(MAX_SHARES, shares))


def cpu_weight(shares: int) -> int:
    """cgroup v2 ``cpu.weight`` from v1 shares (runc's and the kubelet's conversion)."""
    return 1 + ((shares - 2) * 9999) // 262142


def cpu_quota_us(limit_milli: int | None, period_us: int = QUOTA_PERIOD_US) -> int | None:
    """``MilliCPUToQuota``: CFS quota per period for a CPU limit; None = unlimited."""
    if not limit_milli:
        return None
    return max(MIN_QUOTA_PERIOD_US, limit_milli * period_us // 1000)
