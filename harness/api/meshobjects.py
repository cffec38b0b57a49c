"""Kinds of the Multi-Cluster Services API (KEP-1645, ``multicluster.x-k8s.io/v1alpha1``).

``ServiceExport`` is what a user applies: an object with the name and
namespace of the Service it exports, nothing else (v1alpha1 has no spec).
``ServiceImport`` is derived by the mesh (harness/agent/mesh/mcs.py) and
stored by each cluster's control plane; it is listed by ``podlab get`` and
refused by ``apply`` and ``delete`` (the KEP: users must not edit it).
Conditions (Valid, Conflict) of an export are stored apart, under
``serviceexportstatus/<ns>/<name>``, and shown as its ``status``.
"""

from __future__ import annotations

from typing import Any, Literal

from harness.kube.fields import ApiObject

MCS_API_VERSION = "multicluster.x-k8s.io/v1alpha1"


class ServiceExport(ApiObject):
    kind: Literal["ServiceExport"]


class ServiceImport(ApiObject):
    """Read-only here (the mesh writes it); the model only serves ``get``."""

    kind: Literal["ServiceImport"]
    spec: dict[str, Any] | None = None


def _cond(obj: dict[str, Any], kind: str) -> str:
    for c in (obj.get("status") or {}).get("conditions", []):
        if c.get("type") == kind:
            status = str(c.get("status", "Unknown"))
            return (
                status
                if status == "True" and kind == "Valid"
                else f"{status} ({c.get('reason', '')})"
            )
    return "Unknown"


def exports_rows(items: list[dict[str, Any]], all_ns: bool) -> tuple[list[str], list[list[str]]]:
    """``podlab get serviceexports``: NAME VALID CONFLICT (conditions the mesh stored)."""
    header = [*(["NAMESPACE"] if all_ns else []), "NAME", "VALID", "CONFLICT"]
    rows = []
    for o in items:
        meta = o["metadata"]
        row = [meta["name"], _cond(o, "Valid"), _cond(o, "Conflict")]
        rows.append([meta["namespace"], *row] if all_ns else row)
    return header, rows


def imports_rows(items: list[dict[str, Any]], all_ns: bool) -> tuple[list[str], list[list[str]]]:
    """``podlab get serviceimports``: NAME TYPE IP PORTS CLUSTERS."""
    header = [*(["NAMESPACE"] if all_ns else []), "NAME", "TYPE", "IP", "PORTS", "CLUSTERS"]
    rows = []
    for o in items:
        meta, spec = o["metadata"], o.get("spec") or {}
        ports = ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", []))
        clusters = ",".join(c["cluster"] for c in (o.get("status") or {}).get("clusters", []))
        ips = ",".join(spec.get("ips") or []) or "None"
        row = [meta["name"], spec.get("type", ""), ips, ports or "<none>", clusters]
        rows.append([meta["namespace"], *row] if all_ns else row)
    return header, rows
