"""Admission: the apiserver's pod defaulting, LimitRanger and ResourceQuota, pure.

``podlab apply`` and the ReplicaSet controller both run an object through
``admit_pod`` / ``admit_quota`` before writing it, with what etcd holds passed
in, so a refusal reads the same from either (``pods "web-5d9c7b6f4-" is
forbidden: exceeded quota: compute, requested: requests.cpu=500m, used:
requests.cpu=1, limited: requests.cpu=1``):

- pod defaulting: a limit without a request sets the request;
- LimitRanger: each LimitRange's container defaults fill what the container
  lacks (``default`` → limits, ``defaultRequest`` → requests), then min, max
  and maxLimitRequestRatio are enforced per Container and per Pod;
- ResourceQuota: every quota whose ``hard`` names a resource the object uses
  checks ``used + requested ≤ hard``; compute quotas need every container to
  state the resource (``failed quota: NAME: must specify …``).

Usage follows Kubernetes' evaluators: a pod counts in ``count/pods`` always and
in ``pods`` and the compute sums while it is not terminal (Succeeded, Failed,
or past the end of its deletion grace period); a Service counts in
``services``, ``count/services`` and, per node port, ``services.nodeports``;
any other kind in ``count/<resource>``. Quantities add in Kubernetes' way, so
the numbers in messages print as the apiserver prints them.
"""

from __future__ import annotations

import copy
from typing import Any

from harness.kube import deployutil, policy, resources
from harness.kube.quantity import ZERO, Quantity

Obj = dict[str, Any]
Usage = dict[str, Quantity]
LIMIT_RANGER_ANNOTATION = "kubernetes.io/limit-ranger"
# the resources the pod evaluator requires every container to state (validationSet)
_REQUIRED = ("cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory")
_POD_COMPUTE = (
    "pods",
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
)


class Forbidden(Exception):
    """Refused at admission; ``str()`` is the apiserver's whole message."""


def forbidden(resource: str, name: str, reason: str) -> Forbidden:
    return Forbidden(f'{resource} "{name}" is forbidden: {reason}')


# -- pod defaulting and LimitRanger ------------------------------------------------------------
def default_pod(pod: Obj) -> Obj:
    """A copy with each container's missing requests set from its limits."""
    out = copy.deepcopy(pod)
    for c in (out.get("spec") or {}).get("containers") or []:
        res = c.get("resources")
        if res and res.get("limits"):
            c["resources"] = {k: v for k, v in resources.defaulted(res).items() if v}
    return out


def limit_defaults(pod: Obj, limitranges: list[Obj]) -> Obj:
    """LimitRanger's mutation: container defaults from every LimitRange (in order)."""
    out = copy.deepcopy(pod)
    notes: list[str] = []
    for lr in limitranges:
        requests: dict[str, str] = {}
        limits: dict[str, str] = {}
        for item in policy.limit_items(lr):
            if item["type"] == "Container":
                requests.update(item["defaultRequest"])
                limits.update(item["default"])
        for c in (out.get("spec") or {}).get("containers") or []:
            res = c.setdefault("resources", {})
            set_req = [k for k in sorted(requests) if k not in res.get("requests", {})]
            set_lim = [k for k in sorted(limits) if k not in res.get("limits", {})]
            for k in set_lim:
                res.setdefault("limits", {})[k] = limits[k]
            for k in set_req:
                res.setdefault("requests", {})[k] = requests[k]
            if not res:
                del c["resources"]
            if set_req:
                notes.append(f"{', '.join(set_req)} request for container {c.get('name')}")
            if set_lim:
                notes.append(f"{', '.join(set_lim)} limit for container {c.get('name')}")
    if notes:
        ann = out.setdefault("metadata", {}).setdefault("annotations", {})
        ann[LIMIT_RANGER_ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)
    return out


def limit_violations(pod: Obj, limitranges: list[Obj]) -> list[str]:
    """``PodValidateLimitFunc`` over every LimitRange: Kubernetes' messages, in order."""
    errs: list[str] = []
    for lr in limitranges:
        for item in policy.limit_items(lr):
            kind = item["type"]
            if kind == "Container":
                for c in (pod.get("spec") or {}).get("containers") or []:
                    res = c.get("resources") or {}
                    errs += _constraints(kind, item, _q(res.get("requests")), _q(res.get("limits")))
            elif kind == "Pod":
                reqs, lims = resources.pod_requests(pod), resources.pod_limits(pod)
                errs += _constraints(kind, item, reqs, lims)
    seen: list[str] = []
    for e in errs:  # NewAggregate drops duplicates
        if e not in seen:
            seen.append(e)
    return seen


def aggregate(errors: list[str]) -> str:
    """``utilerrors.NewAggregate(errs).Error()``."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


def _q(values: dict[str, str] | None) -> Usage:
    return {k: Quantity.parse(v) for k, v in (values or {}).items()}


def _constraints(kind: str, item: Obj, req: Usage, lim: Usage) -> list[str]:
    out = []
    for name, text in sorted(item["min"].items()):
        enforced = Quantity.parse(text)
        if name not in req:
            out.append(f"minimum {name} usage per {kind} is {enforced}.  No request is specified")
        elif req[name] < enforced:
            out.append(f"minimum {name} usage per {kind} is {enforced}, but request is {req[name]}")
        elif name in lim and lim[name] < enforced:
            out.append(f"minimum {name} usage per {kind} is {enforced}, but limit is {lim[name]}")
    for name, text in sorted(item["max"].items()):
        enforced = Quantity.parse(text)
        if name not in lim:
            out.append(f"maximum {name} usage per {kind} is {enforced}.  No limit is specified")
        elif lim[name] > enforced:
            out.append(f"maximum {name} usage per {kind} is {enforced}, but limit is {lim[name]}")
        elif name in req and req[name] > enforced:
            out.append(f"maximum {name} usage per {kind} is {enforced}, but request is {req[name]}")
    for name, text in sorted(item["maxLimitRequestRatio"].items()):
        enforced = Quantity.parse(text)
        head = f"{name} max limit to request ratio per {kind} is {enforced}"
        if name not in req or req[name].is_zero():
            out.append(f"{head}, but no request is specified or request is 0")
        elif name not in lim or lim[name].is_zero():
            out.append(f"{head}, but no limit is specified or limit is 0")
        else:
            ratio = lim[name].value / req[name].value
            if ratio > enforced.value:
                out.append(f"{head}, but provided ratio is {float(ratio):f}")
    return out


def admit_pod(pod: Obj, limitranges: list[Obj], display_name: str) -> Obj:
    """Defaulting then LimitRanger; the admitted pod, or Forbidden."""
    pod = limit_defaults(default_pod(pod), limitranges)
    errors = limit_violations(pod, limitranges)
    if errors:
        raise forbidden("pods", display_name, aggregate(errors))
    return pod


def request_problems(pod: Obj) -> list[tuple[int, str]]:
    """Requests above limits after defaulting (the validation that runs after admission):
    (container index, Kubernetes' message)."""
    out = []
    for i, c in enumerate((pod.get("spec") or {}).get("containers") or []):
        res = c.get("resources") or {}
        for name, text in sorted((res.get("requests") or {}).items()):
            limit = (res.get("limits") or {}).get(name)
            if limit is not None and Quantity.parse(text) > Quantity.parse(limit):
                detail = f"must be less than or equal to {name} limit of {limit}"
                out.append((i, f'Invalid value: "{text}": {detail}'))
    return out


# -- ResourceQuota ---------------------------------------------------------------------------------
def pod_counts(pod: Obj, phase: str | None, now: float) -> bool:
    """``QuotaV1Pod``: does the pod still count in ``pods`` and the compute sums?"""
    if phase in ("Succeeded", "Failed"):
        return False
    meta = pod.get("metadata") or {}
    deleted = deployutil.parse_time(meta.get("deletionTimestamp"))
    grace = meta.get("deletionGracePeriodSeconds")
    return not (deleted is not None and grace is not None and now > deleted + float(grace))


def usage(resource: str, obj: Obj, phase: str | None = None, now: float = 0.0) -> Usage:
    """What one object uses, by quota resource name (the evaluators' ``Usage``)."""
    one = Quantity.of(1)
    if resource == "pods":
        out: Usage = {"count/pods": one}
        if not pod_counts(obj, phase, now):
            return out
        out["pods"] = one
        req, lim = resources.pod_requests(obj), resources.pod_limits(obj)
        for name in ("cpu", "memory", "ephemeral-storage"):
            if name in req:
                out[name] = req[name]
                out[f"requests.{name}"] = req[name]
            if name in lim:
                out[f"limits.{name}"] = lim[name]
        return out
    if resource == "services":
        spec = obj.get("spec") or {}
        ports = spec.get("ports") or [] if spec.get("type") == "NodePort" else []
        return {
            "count/services": one,
            "services": one,
            "services.nodeports": Quantity.of(len(ports)),
            "services.loadbalancers": ZERO,
        }
    out = {f"count/{resource}": one}
    if resource == "resourcequotas":
        out["resourcequotas"] = one
    return out


def matching(resource: str, hard: dict[str, Any]) -> list[str]:
    """The hard resources a quota would check for an object of ``resource``."""
    if resource == "pods":
        huge = ("requests.hugepages-", "hugepages")
        names = [k for k in hard if k in _POD_COMPUTE or k.startswith(huge)]
    elif resource == "services":
        names = [k for k in hard if k in ("services", "count/services", "services.nodeports",
                                           "services.loadbalancers")]  # fmt: skip
    else:
        names = [k for k in hard if k == f"count/{resource}" or k == resource]
    return sorted(names)


def add(a: Usage, b: Usage) -> Usage:
    """``quota.Add``: keys of both; the left operand's format where both have a key."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out


def used(hard: dict[str, str], objects: list[tuple[str, Obj, str | None]], now: float) -> Usage:
    """The quota controller's ``status.used``: every hard resource, summed over the
    namespace's objects ((resource, object, pod phase))."""
    total: Usage = {}
    for resource, obj, phase in objects:
        total = add(total, usage(resource, obj, phase, now))
    return {k: total.get(k, ZERO) for k in hard}


def pretty(values: Usage) -> str:
    return ",".join(f"{k}={values[k]}" for k in sorted(values))


def admit_quota(
    resource: str,
    obj: Obj,
    display_name: str,
    quotas: list[tuple[str, dict[str, str], Usage]],
    now: float,
) -> dict[str, Usage]:
    """Check ``obj`` against every quota ((name, hard, used)); the quotas' new ``used``
    (name → usage) to write with the object, or Forbidden with Kubernetes' text."""
    delta = {k: v for k, v in usage(resource, obj, None, now).items() if not v.is_zero()}
    interesting = []
    for name, hard, _ in quotas:
        restricted = matching(resource, hard)
        if not restricted:
            continue
        if resource == "pods":
            missing = _must_specify(obj, restricted)
            if missing:
                raise forbidden(resource, display_name, f"failed quota: {name}: {missing}")
        interesting.append(name)
    if not delta:
        return {}
    out: dict[str, Usage] = {}
    for name, hard, current in quotas:
        if name not in interesting:
            continue
        requested = {k: v for k, v in delta.items() if k in hard}
        new = add({k: current.get(k, ZERO) for k in hard}, requested)
        exceeded = [k for k in requested if new[k] > Quantity.parse(hard[k])]
        if exceeded:
            asked = pretty({k: requested[k] for k in exceeded})
            text = (
                f"exceeded quota: {name}, requested: {asked}, "
                f"used: {pretty({k: current.get(k, ZERO) for k in exceeded})}, "
                f"limited: {pretty({k: Quantity.parse(hard[k]) for k in exceeded})}"
            )
            raise forbidden(resource, display_name, text)
        out[name] = new
    return out


def _must_specify(pod: Obj, restricted: list[str]) -> str:
    """The pod evaluator's ``Constraints``: every container states each quota'd resource."""
    required = [r for r in restricted if r in _REQUIRED]
    missing: dict[str, list[str]] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = resources.defaulted(c.get("resources"))
        have = set()
        for name in ("cpu", "memory"):
            if name in res["requests"]:
                have |= {name, f"requests.{name}"}
            if name in res["limits"]:
                have.add(f"limits.{name}")
        for r in required:
            if r not in have:
                missing.setdefault(r, []).append(str(c.get("name")))
    if not missing:
        return ""
    parts = [f"{r} for: {','.join(sorted(set(names)))}" for r, names in sorted(missing.items())]
    return "must specify " + "; ".join(parts)
