"""What ``podlab get`` prints: kubectl's tables, Lists, names. Pure text functions.

Tables follow kubectl's columns and its column spacing (three spaces), ages use
kubectl's HumanDuration, and ``-o json|yaml`` print the object itself for one
name and a ``kind: List`` otherwise, so scripts written against kubectl output
keep working.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from harness.api import meshobjects
from harness.api.objects import NodeRecord
from harness.api.schedule import heartbeat_age_s, is_ready

NONE = "<none>"


def human_duration(seconds: float) -> str:
    """kubectl's age format: 45s, 3m2s, 12m, 5h3m, 20h, 3d4h, 40d, 2y10d."""
    if seconds < -1:
        return "<invalid>"
    s = max(int(seconds), 0)
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    if d < 365 * 8:
        return f"{d // 365}y{d % 365}d" if d % 365 else f"{d // 365}y"
    return f"{d // 365}y"


def age(timestamp: str | None, now: float) -> str:
    """Age of an RFC 3339 timestamp, or ``<unknown>``."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "<unknown>"
    return human_duration(now - then)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, three spaces apart, as kubectl's tabwriter prints them."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def pod_row(pod: dict[str, Any], now: float, wide: bool, namespace_col: bool) -> list[str]:
    meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
    total = len(spec.get("containers", []))
    row = [meta["namespace"]] if namespace_col else []
    row += [
        meta["name"],
        f"{_ready_containers(status, total)}/{total}",
        "Terminating" if meta.get("deletionTimestamp") else status.get("phase", "Pending"),
        str(sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses", []))),
        age(meta.get("creationTimestamp"), now),
    ]
    if wide:
        row += [status.get("podIP") or NONE, spec.get("nodeName") or NONE]
    return row


def _ready_containers(status: dict[str, Any], total: int) -> int:
    if status.get("containerStatuses"):
        return sum(1 for c in status["containerStatuses"] if c.get("ready"))
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )
    return total if ready else 0


def pods_table(pods: list[dict[str, Any]], now: float, wide: bool, all_ns: bool) -> str:
    header = (["NAMESPACE"] if all_ns else []) + ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if wide:
        header += ["IP", "NODE"]
    return table(header, [pod_row(p, now, wide, all_ns) for p in pods])


def nodes_table(nodes: list[NodeRecord], now: float, wide: bool) -> str:
    header = ["NAME", "STATUS", "POD-CIDR", "INTERNAL-IP", "MODE", "HOLLOW", "AGE"]
    if wide:
        header += ["SEGMENT", "HEARTBEAT"]
    rows = []
    for n in nodes:
        row = [
            n.name,
            "Ready" if is_ready(n, now) else "NotReady",
            n.podCIDR or NONE,
            n.underlayIP or NONE,
            n.mode or NONE,
            "yes" if n.hollow else "no",
            age(n.creationTimestamp, now),
        ]
        if wide:
            beat = heartbeat_age_s(n, now)
            row += [n.segment or NONE, NONE if beat is None else f"{human_duration(beat)} ago"]
        rows.append(row)
    return table(header, rows)


def node_object(n: NodeRecord, now: float) -> dict[str, Any]:
    """A node record shaped like a Kubernetes Node (podlab extras as annotations)."""
    ready = is_ready(n, now)
    extra = n.model_dump(mode="json", exclude_none=True)
    annotations = {
        f"podlab.io/{k}": v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        for k, v in extra.items()
        if k not in ("name", "podCIDR", "underlayIP", "creationTimestamp", "heartbeat")
        and not (k == "hollow" and v is False)  # only hollow nodes say so
    }
    meta: dict[str, Any] = {"name": n.name, "annotations": annotations}
    if n.creationTimestamp:
        meta["creationTimestamp"] = n.creationTimestamp
    status: dict[str, Any] = {
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}
            | ({"lastHeartbeatTime": _beat(n.heartbeat)} if n.heartbeat else {})
        ],
        "addresses": [{"type": "InternalIP", "address": n.underlayIP}] if n.underlayIP else [],
    }
    spec = {"podCIDR": n.podCIDR} if n.podCIDR else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec, "status": status}


def _beat(heartbeat: float | str) -> str:
    if isinstance(heartbeat, str):
        return heartbeat
    return datetime.fromtimestamp(heartbeat, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    """kubectl's List envelope."""
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def dump(data: dict[str, Any], fmt: str) -> str:
    """``-o json`` or ``-o yaml`` of an object or List."""
    if fmt == "json":
        return json.dumps(data, indent=4)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")


def names(kind: str, items: list[dict[str, Any]]) -> str:
    """``-o name``: ``pod/web`` per line."""
    return "\n".join(f"{kind}/{i['metadata']['name']}" for i in items)


def _selector(sel: dict[str, Any] | None) -> str:
    """``{matchLabels: {app: db}}`` or a plain map → ``app=db`` (kubectl's column)."""
    sel = sel or {}
    labels = sel.get("matchLabels", sel if "matchExpressions" not in sel else {})
    parts = [f"{k}={v}" for k, v in sorted(labels.items()) if isinstance(v, str)]
    parts += [f"{e.get('key')} {e.get('operator')}" for e in sel.get("matchExpressions", [])]
    return ",".join(parts) or NONE


def _ports(spec: dict[str, Any]) -> str:
    out = []
    for p in spec.get("ports", []):
        node = f":{p['nodePort']}" if p.get("nodePort") else ""
        out.append(f"{p.get('port')}{node}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or NONE


def services_table(items: list[dict[str, Any]], now: float, wide: bool, all_ns: bool) -> str:
    """kubectl's Service columns: NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE [SELECTOR]."""
    header = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    rows = []
    for s in items:
        meta, spec = s["metadata"], s.get("spec", {})
        kind = spec.get("type", "ClusterIP")
        ip = NONE if kind == "ExternalName" else spec.get("clusterIP") or NONE
        row = [meta["name"], kind, ip, spec.get("externalName") or NONE, _ports(spec)]
        row.append(age(meta.get("creationTimestamp"), now))
        if wide:
            row.append(_selector(spec.get("selector")))
        rows.append([meta["namespace"], *row] if all_ns else row)
    header += ["SELECTOR"] if wide else []
    return table(["NAMESPACE", *header] if all_ns else header, rows)


def policies_table(items: list[dict[str, Any]], now: float, wide: bool, all_ns: bool) -> str:
    """kubectl's NetworkPolicy columns: NAME POD-SELECTOR AGE."""
    rows = []
    for p in items:
        meta = p["metadata"]
        row = [meta["name"], _selector(p.get("spec", {}).get("podSelector"))]
        row.append(age(meta.get("creationTimestamp"), now))
        rows.append([meta["namespace"], *row] if all_ns else row)
    header = ["NAME", "POD-SELECTOR", "AGE"]
    return table(["NAMESPACE", *header] if all_ns else header, rows)


def namespaces_table(items: list[dict[str, Any]], now: float, wide: bool, all_ns: bool) -> str:
    """kubectl's Namespace columns: NAME STATUS AGE (-o wide adds LABELS)."""
    rows = []
    for n in items:
        meta = n["metadata"]
        row = [meta["name"], "Active", age(meta.get("creationTimestamp"), now)]
        if wide:
            row.append(_selector(meta.get("labels")))
        rows.append(row)
    return table(["NAME", "STATUS", "AGE", *(["LABELS"] if wide else [])], rows)


def exports_table(items: list[dict[str, Any]], now: float, wide: bool, all_ns: bool) -> str:
    """NAME VALID CONFLICT AGE (the conditions the cluster's mesh writer stored)."""
    header, rows = meshobjects.exports_rows(items, all_ns)
    ages = [age(o["metadata"].get("creationTimestamp"), now) for o in items]
    return table([*header, "AGE"], [[*r, a] for r, a in zip(rows, ages, strict=True)])


def imports_table(items: list[dict[str, Any]], now: float, wide: bool, all_ns: bool) -> str:
    """NAME TYPE IP PORTS CLUSTERS."""
    return table(*meshobjects.imports_rows(items, all_ns))


TABLES = {
    "Pod": pods_table,
    "Service": services_table,
    "NetworkPolicy": policies_table,
    "Namespace": namespaces_table,
    "ServiceExport": exports_table,
    "ServiceImport": imports_table,
}
