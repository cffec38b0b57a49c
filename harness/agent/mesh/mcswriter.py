"""The cluster's Multi-Cluster Services writer: ServiceImports and export conditions.

KEP-1645 makes ServiceImports controller-owned objects of each importing
cluster; this is that controller's storing half. It runs in the services
controller of the cluster's control-plane node (one writer per cluster, like
kube-controller-manager's) after each programming pass, from the same derived
state every node computes (``mcs.resolve``), and writes only differences:

- ``serviceimports/<ns>/<name>``: the ServiceImport, with a ClusterSetIP from
  this cluster's service CIDR. The address is claimed through the same index
  ``podlab apply`` uses for ClusterIPs (``serviceips/<ip>``, created only if
  absent, value ``serviceimport:<ns>/<name>``), from the top of the CIDR down
  (apply allocates from the bottom up), so the two never hand out one address
  twice. A claim found in the index is reused: a crash between the claim and
  the import, or a second pass before our own write came back, costs nothing.
  When the last export goes, the import and its claim are deleted.
- ``serviceexportstatus/<ns>/<name>``: the conditions (Valid, Conflict) of this
  cluster's own ServiceExports, with ``lastTransitionTime`` kept while a
  condition does not change. Kept apart from the export object (which only
  ``podlab apply`` writes), as a pod's status is.
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import UTC, datetime
from typing import Any

from harness.agent.mesh.desired import MeshDesired, stored_ip
from harness.store import Store
from harness.store.keys import ROOT

log = logging.getLogger("podlab.mesh.mcs")
Ref = tuple[str, str]
OWNER = "serviceimport:"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class McsWriter:
    """Stores what the mesh derived for one cluster (see the module docstring)."""

    def __init__(self, store: Store, cluster: str, service_cidr: str) -> None:
        self.store, self.cluster = store, cluster
        self.cidr = ipaddress.IPv4Network(service_cidr)
        self.base = f"{ROOT}/{cluster}"

    def sync(
        self,
        mesh: MeshDesired,
        imports: dict[Ref, dict[str, Any]],
        statuses: dict[Ref, dict[str, Any]],
    ) -> bool:
        """Bring the stored imports and export statuses to ``mesh``'s; best effort
        (a failure is logged, False, and retried on the next pass)."""
        try:
            self._imports(mesh, imports)
            self._statuses(mesh, statuses)
        except Exception as exc:
            log.warning("could not store ServiceImports/export conditions: %s", exc)
            return False
        return True

    def _imports(self, mesh: MeshDesired, stored: dict[Ref, dict[str, Any]]) -> None:
        for ref, imp in sorted(mesh.imports.items()):
            old = stored.get(ref)
            ip = stored_ip(old)
            if imp.type == "ClusterSetIP" and not ip:
                ip = self._claim(ref)
            elif imp.type != "ClusterSetIP" and ip:
                self._release(ref, ip)
                ip = None
            want = imp.to_object([ip] if ip else [])
            if old != want:
                self.store.put_json(self._key("serviceimports", ref), want)
                log.info("ServiceImport %s/%s: %s %s from %s", *ref, imp.type, ip or "",
                         ", ".join(imp.clusters))  # fmt: skip
        for ref in sorted(set(stored) - set(mesh.imports)):
            self.store.delete(self._key("serviceimports", ref))
            if ip := stored_ip(stored[ref]):
                self._release(ref, ip)
            log.info("ServiceImport %s/%s removed: no cluster exports it any more", *ref)

    def _statuses(self, mesh: MeshDesired, stored: dict[Ref, dict[str, Any]]) -> None:
        mine = {(ns, name): conds for (c, ns, name), conds in mesh.conditions.items()
                if c == self.cluster}  # fmt: skip
        for ref, conds in sorted(mine.items()):
            old = {c.get("type"): c for c in (stored.get(ref) or {}).get("conditions", [])}
            out = []
            for cond in conds:
                d = cond.to_dict()
                prev = old.get(cond.type) or {}
                same = prev.get("status") == d["status"] and prev.get("reason") == d["reason"]
                d["lastTransitionTime"] = prev.get("lastTransitionTime") if same else _now()
                out.append(d)
            want = {"conditions": out}
            if stored.get(ref) != want:
                self.store.put_json(self._key("serviceexportstatus", ref), want)
        for ref in sorted(set(stored) - set(mine)):
            self.store.delete(self._key("serviceexportstatus", ref))

    def _key(self, kind: str, ref: Ref) -> str:
        return f"{self.base}/{kind}/{ref[0]}/{ref[1]}"

    def _claim(self, ref: Ref) -> str | None:
        """This import's ClusterSetIP: its existing claim, else the highest free address."""
        owner = f"{OWNER}{ref[0]}/{ref[1]}"
        index, _ = self.store.get_prefix(f"{self.base}/serviceips/")
        taken = set()
        for kv in index:
            ip = kv.key.rsplit("/", 1)[-1]
            if kv.value.decode(errors="replace") == owner:
                return ip
            taken.add(ip)
        dns = str(self.cidr.network_address + 10)
        last = int(self.cidr.broadcast_address) - 1
        for n in range(last, int(self.cidr.network_address), -1):
            ip = str(ipaddress.IPv4Address(n))
            if ip in taken or ip == dns:
                continue
            if self.store.create(f"{self.base}/serviceips/{ip}", owner):
                return ip
        log.warning("service CIDR %s has no free address for ServiceImport %s/%s", self.cidr, *ref)
        return None

    def _release(self, ref: Ref, ip: str) -> None:
        key = f"{self.base}/serviceips/{ip}"
        kv = self.store.get(key)
        if kv is not None and kv.value.decode(errors="replace") == f"{OWNER}{ref[0]}/{ref[1]}":
            self.store.delete_if(key, kv.mod_revision)
