"""kubectl's tables for the workload kinds (Deployment, ReplicaSet, HPA, quota, limits)
and for ``podlab top``. Pure text functions, like ``output``.

Columns as kubectl prints them: deployments ``NAME READY UP-TO-DATE AVAILABLE
AGE``, replicasets ``NAME DESIRED CURRENT READY AGE`` (``-o wide`` adds
``CONTAINERS IMAGES SELECTOR``), hpa ``NAME REFERENCE TARGETS MINPODS MAXPODS
REPLICAS AGE`` with targets like ``cpu: 45%/50%``, resourcequota ``NAME AGE
REQUEST LIMIT`` (``pods: 1/4, requests.cpu: 500m/2``), limitrange ``NAME
CREATED AT``; ``top pods`` ``NAME CPU(cores) MEMORY(bytes)``, ``top nodes``
adds the percentages of allocatable.
"""

from __future__ import annotations

from typing import Any

from harness.api.output import NONE, age, table
from harness.kube import autoscaling, labels
from harness.kube.quantity import Quantity

Obj = dict[str, Any]


def _ns(row: list[str], item: Obj, all_ns: bool) -> list[str]:
    return [item["metadata"]["namespace"], *row] if all_ns else row


def _header(cols: list[str], all_ns: bool) -> list[str]:
    return ["NAMESPACE", *cols] if all_ns else cols


def _wide(item: Obj) -> list[str]:
    template = (item.get("spec") or {}).get("template") or {}
    cs = (template.get("spec") or {}).get("containers") or []
    names = ",".join(str(c.get("name")) for c in cs) or NONE
    images = ",".join(str(c.get("image") or NONE) for c in cs) or NONE
    return [names, images, labels.as_text((item.get("spec") or {}).get("selector")) or NONE]


def deployments_table(items: list[Obj], now: float, wide: bool, all_ns: bool) -> str:
    cols = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    rows = []
    for d in items:
        st, spec = d.get("status") or {}, d.get("spec") or {}
        row = [
            d["metadata"]["name"],
            f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            str(st.get("updatedReplicas", 0)),
            str(st.get("availableReplicas", 0)),
            age(d["metadata"].get("creationTimestamp"), now),
        ]
        rows.append(_ns(row + (_wide(d) if wide else []), d, all_ns))
    wide_cols = ["CONTAINERS", "IMAGES", "SELECTOR"] if wide else []
    return table(_header(cols + wide_cols, all_ns), rows)


def replicasets_table(items: list[Obj], now: float, wide: bool, all_ns: bool) -> str:
    cols = ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    rows = []
    for rs in items:
        st, spec = rs.get("status") or {}, rs.get("spec") or {}
        row = [
            rs["metadata"]["name"],
            str(spec.get("replicas", 1)),
            str(st.get("replicas", 0)),
            str(st.get("readyReplicas", 0)),
            age(rs["metadata"].get("creationTimestamp"), now),
        ]
        rows.append(_ns(row + (_wide(rs) if wide else []), rs, all_ns))
    wide_cols = ["CONTAINERS", "IMAGES", "SELECTOR"] if wide else []
    return table(_header(cols + wide_cols, all_ns), rows)


def hpa_targets(hpa: Obj) -> str:
    """kubectl's TARGETS: ``cpu: 45%/50%``, ``memory: <unknown>/100Mi``."""
    statuses = (hpa.get("status") or {}).get("currentMetrics") or []
    parts = []
    for i, spec in enumerate(autoscaling.metrics(hpa)):
        field = "resource" if spec.get("type") == "Resource" else "containerResource"
        source = spec.get(field) or {}
        target = source.get("target") or {}
        current = ((statuses[i].get(field) or {}).get("current") or {}) if i < len(statuses) else {}
        if target.get("averageValue") is not None:
            now = current.get("averageValue") or "<unknown>"
            parts.append(f"{source.get('name')}: {now}/{target['averageValue']}")
        else:
            util = current.get("averageUtilization")
            now = f"{util}%" if util is not None else "<unknown>"
            want = target.get("averageUtilization")
            parts.append(f"{source.get('name')}: {now}/{want}%" if want else f"{now}/<auto>")
    if len(parts) > 2:
        return f"{', '.join(parts[:2])} + {len(parts) - 2} more..."
    return ", ".join(parts) or NONE


def hpa_table(items: list[Obj], now: float, wide: bool, all_ns: bool) -> str:
    cols = ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    rows = []
    for h in items:
        spec, st = h.get("spec") or {}, h.get("status") or {}
        row = [
            h["metadata"]["name"],
            autoscaling.target_text(h),
            hpa_targets(h),
            str(spec.get("minReplicas", "<unset>")),
            str(spec.get("maxReplicas")),
            str(st.get("currentReplicas", 0)),
            age(h["metadata"].get("creationTimestamp"), now),
        ]
        rows.append(_ns(row, h, all_ns))
    return table(_header(cols, all_ns), rows)


def quota_table(items: list[Obj], now: float, wide: bool, all_ns: bool) -> str:
    rows = []
    for q in items:
        st = q.get("status") or {}
        hard = st.get("hard") or (q.get("spec") or {}).get("hard") or {}
        used = st.get("used") or {}
        req: list[str] = []
        lim: list[str] = []
        for name in sorted(hard):
            text = f"{name}: {used.get(name, '0')}/{hard[name]}"
            (lim if name.startswith("limits") else req).append(text)
        row = [q["metadata"]["name"], age(q["metadata"].get("creationTimestamp"), now),
               ", ".join(req), ", ".join(lim)]  # fmt: skip
        rows.append(_ns(row, q, all_ns))
    return table(_header(["NAME", "AGE", "REQUEST", "LIMIT"], all_ns), rows)


def limitrange_table(items: list[Obj], now: float, wide: bool, all_ns: bool) -> str:
    rows = [
        _ns([lr["metadata"]["name"], lr["metadata"].get("creationTimestamp") or NONE], lr, all_ns)
        for lr in items
    ]
    return table(_header(["NAME", "CREATED AT"], all_ns), rows)


TABLES = {
    "Deployment": deployments_table,
    "ReplicaSet": replicasets_table,
    "HorizontalPodAutoscaler": hpa_table,
    "ResourceQuota": quota_table,
    "LimitRange": limitrange_table,
}


# -- podlab top ---------------------------------------------------------------------------------
def cores(text: str) -> str:
    return f"{Quantity.parse(text).milli_value()}m"


def mebibytes(text: str) -> str:
    return f"{Quantity.parse(text).int_value() // (1024 * 1024)}Mi"


def top_pods_table(rows: list[tuple[str, str, str, str]], all_ns: bool) -> str:
    """(namespace, name, cpu, memory) → kubectl top pods' table."""
    out = [
        ([ns] if all_ns else []) + [name, cores(cpu), mebibytes(mem)] for ns, name, cpu, mem in rows
    ]
    return table(_header(["NAME", "CPU(cores)", "MEMORY(bytes)"], all_ns), out)


def top_nodes_table(rows: list[tuple[str, str, str, Obj]]) -> str:
    """(node, cpu, memory, allocatable) → kubectl top nodes' table."""
    out = []
    for node, cpu, mem, alloc in rows:
        cpu_pct = _pct(Quantity.parse(cpu).milli_value(), alloc.get("cpu"), milli=True)
        mem_pct = _pct(Quantity.parse(mem).int_value(), alloc.get("memory"), milli=False)
        out.append([node, cores(cpu), cpu_pct, mebibytes(mem), mem_pct])
    return table(["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], out)


def _pct(value: int, capacity: Any, milli: bool) -> str:
    if capacity is None:
        return NONE
    cap = Quantity.parse(capacity)
    whole = cap.milli_value() if milli else cap.int_value()
    return f"{value * 100 // whole}%" if whole else NONE
