"""Label selectors on stored objects (``matchLabels`` AND ``matchExpressions``).

The same rule as ``LabelSelector.matches`` on the manifest model, for the dicts
the controllers read from etcd. A selector with neither part matches
everything (Kubernetes' ``LabelSelectorAsSelector``); callers that must refuse
an empty selector (Deployments, ReplicaSets) validate that at apply.
"""

from __future__ import annotations

from typing import Any


def matches(selector: dict[str, Any] | None, labels: dict[str, str] | None) -> bool:
    selector, labels = selector or {}, labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req.get("key"), req.get("operator"), req.get("values") or []
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(str(op), False)
        if not ok:
            return False
    return True


def as_text(selector: dict[str, Any] | None) -> str:
    """kubectl's selector text: ``app=web,tier in (a,b)``."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for req in selector.get("matchExpressions") or []:
        op, key, values = req.get("operator"), req.get("key"), req.get("values") or []
        if op in ("In", "NotIn"):
            parts.append(f"{key} {str(op).lower()} ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        else:
            parts.append(f"!{key}")
    return ",".join(parts)
