"""Apply-time checks of Multi-Cluster Services, before anything is written.

Two mistakes are refused with the object, the cluster and the fix named, and
nothing written (the apply is one transaction):

- a ``ServiceExport`` whose Service is neither in the cluster nor in the same
  apply (KEP-1645 would keep it as ``Valid=False/NoService``; here it is the
  typo it almost always is);
- an apply that puts this cluster's export in conflict with another cluster's
  export of the same service (ports, headlessness, session affinity), as the
  other clusters' objects are mirrored into this cluster's etcd. KEP-1645
  resolves a conflict by age — the oldest export wins and every export is
  marked ``Conflict=True`` — which stays what the mesh does once a conflict
  exists (a Service changed later, two clusters exporting at the same moment);
  ``--allow-conflict`` lets an apply create one knowingly.
"""

from __future__ import annotations

import json
from typing import Any

from harness.agent.mesh import mcs
from harness.agent.mesh.views import build_views
from harness.api.objects import API_PREFIX, KINDS, object_key
from harness.api.validate import Located, format_path
from harness.errors import Problem
from harness.store import Store, Write

Ref = tuple[str, str]


def problems(
    kv: Store, cluster: str, objects: list[Located], writes: list[Write], allow_conflict: bool
) -> list[Problem]:
    """Every MCS problem of applying ``objects`` (whose planned ``writes`` are given)."""
    base = f"{API_PREFIX}/{cluster}/"
    batch = {
        (loc.info.kind, loc.obj.metadata.namespace, loc.obj.metadata.name): loc for loc in objects
    }
    out = []
    for (kind, ns, name), loc in batch.items():
        if kind != "ServiceExport" or ("Service", ns, name) in batch:
            continue
        if kv.get(object_key(cluster, KINDS["Service"], ns, name)) is None:
            message = f"there is no Service {ns}/{name} in cluster {cluster} to export"
            hint = "apply the Service first, or in the same file as its export"
            out.append(_at(loc, message, hint))
    if out:
        return out
    if not _exporting(kv, cluster, batch):
        return []
    before = _items(kv, base)
    after = dict(before)
    for w in writes:
        rel = w.key[len(base) :]
        if rel.startswith(("services/", "serviceexports/")):
            if w.value is None:
                after.pop(rel, None)
            else:
                after[rel] = json.loads(w.value)
    was = _conflicts(cluster, before)
    now = _conflicts(cluster, after)
    for ref, (found, oldest) in sorted(now.items()):
        if not found or allow_conflict or was.get(ref, ([], None))[0] == found:
            continue
        at = batch.get(("ServiceExport", *ref)) or batch.get(("Service", *ref))
        if at is None:
            continue
        what = "; ".join(text for _, text in found)
        out.append(
            _at(
                at,
                f"exporting {ref[0]}/{ref[1]} from cluster {cluster} would conflict with the "
                f"other exporting clusters: {what} (KEP-1645: the oldest export, cluster "
                f"{oldest.cluster}'s, wins and every export is marked in conflict)",
                "give the Service the same ports, type and session affinity as in the other "
                "clusters, or pass --allow-conflict to export it anyway",
            )
        )
    return out


def _exporting(kv: Store, cluster: str, batch: dict[tuple[str, str, str], Located]) -> bool:
    """Whether the apply touches an exported service: a ServiceExport in it, or a Service
    this cluster exports. Only those can conflict (``_conflicts`` judges this cluster's
    exports), so a plain Service's apply skips reading every service, export and mirror
    of the mesh (issue 15: at 1,000 Services that read made each Service's apply
    O(Services), and creating them quadratic)."""
    if any(kind == "ServiceExport" for kind, _, _ in batch):
        return True
    export = KINDS["ServiceExport"]
    return any(
        kv.get(object_key(cluster, export, ns, name)) is not None
        for kind, ns, name in batch
        if kind == "Service"
    )


def _items(kv: Store, base: str) -> dict[str, dict[str, Any]]:
    """Relative key → object: this cluster's services and exports, and the mirrored ones."""
    out = {}
    for prefix in ("services/", "serviceexports/", "mesh/"):
        for e in kv.get_prefix(base + prefix)[0]:
            rel = e.key[len(base) :]
            parts = rel.split("/")
            if parts[0] == "mesh" and (
                len(parts) < 3 or parts[2] not in ("services", "serviceexports")
            ):
                continue
            try:
                out[rel] = json.loads(e.value)
            except ValueError:
                continue
    return out


def _conflicts(cluster: str, items: dict[str, dict[str, Any]]) -> dict[Ref, Any]:
    """The conflicts of every service this cluster exports."""
    local, remotes = build_views(cluster, items.items())
    found = mcs.conflicts(mcs.exports_of(local, remotes.values()))
    return {ref: v for ref, v in found.items() if ref in local.exports}


def _at(loc: Located, message: str, hint: str) -> Problem:
    ref = f"{loc.info.kind.lower()}/{loc.obj.metadata.name}"
    path = ("metadata", "name")
    where = f"document {loc.doc.index} ({ref}): {format_path(path)}"
    return Problem(loc.doc.file, where, message, hint, loc.doc.line(path))
