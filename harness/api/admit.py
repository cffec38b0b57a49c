"""Admission at ``podlab apply``: LimitRange defaults and checks, ResourceQuota.

The rules are ``harness.kube.admission``'s (shared with the ReplicaSet
controller); this module reads what they need from etcd, once per namespace:
the LimitRanges, the ResourceQuotas with their stored status, and the
namespace's objects for the quotas' usage. Usage is recomputed from the
objects themselves at every apply (not taken from the quota's status, which
the controller manager refreshes), and each quota whose usage grows is
written back in the same transaction as the objects, guarded by the revision
read: two concurrent creators (an apply and the ReplicaSet controller) can
never both take the last unit of a quota; the loser re-reads and is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.api.objects import KINDS, KindInfo, kind_prefix
from harness.kube import admission
from harness.kube.quantity import Quantity
from harness.store import KV, Store, Write, keys

Obj = dict[str, Any]
QUOTA = KINDS["ResourceQuota"]


@dataclass
class Quota:
    name: str
    hard: dict[str, str]
    used: admission.Usage
    status: KV | None
    changed: bool = False


@dataclass
class Namespace:
    limitranges: list[Obj] = field(default_factory=list)
    quotas: list[Quota] = field(default_factory=list)


def status_key(cluster: str, info: KindInfo, namespace: str, name: str) -> str:
    assert info.status_plural is not None
    return keys.object_key(cluster, info.status_plural, namespace, name)


def quota_status_value(hard: dict[str, str], used: admission.Usage) -> bytes:
    data = {"hard": dict(sorted(hard.items())),
            "used": {k: str(used[k]) for k in sorted(used)}}  # fmt: skip
    return json.dumps(data, sort_keys=True).encode()


def namespace_objects(store: Store, cluster: str, namespace: str, info: KindInfo) -> list[Obj]:
    return [_load(e.value) for e in store.get_prefix(kind_prefix(cluster, info, namespace))[0]]


def pod_phases(store: Store, cluster: str, namespace: str) -> dict[str, str]:
    """Pod name → phase, from the agents' status records (for ``pods`` usage)."""
    out = {}
    for e in store.get_prefix(keys.podstatus_prefix(cluster, namespace))[0]:
        out[e.key.rsplit("/", 1)[-1]] = str(_load(e.value).get("phase") or "")
    return out


def quota_usage_objects(
    store: Store, cluster: str, namespace: str, hard: dict[str, str]
) -> list[tuple[str, Obj, str | None]]:
    """The namespace's objects a quota with these hard resources counts."""
    wanted = [info for info in KINDS.values() if info.namespaced and _counts(info, hard)]
    out: list[tuple[str, Obj, str | None]] = []
    for info in wanted:
        phases = pod_phases(store, cluster, namespace) if info.kind == "Pod" else {}
        for obj in namespace_objects(store, cluster, namespace, info):
            name = str((obj.get("metadata") or {}).get("name"))
            out.append((info.resource, obj, phases.get(name)))
    return out


def _counts(info: KindInfo, hard: dict[str, str]) -> bool:
    return bool(admission.matching(info.resource, hard))


class Admitter:
    """Admission for one apply: reads each namespace once, accumulates quota usage."""

    def __init__(self, store: Store, cluster: str, clock: Callable[[], float] = time.time) -> None:
        self.store, self.cluster, self.clock = store, cluster, clock
        self._ns: dict[str, Namespace] = {}
        self._seeded: dict[str, tuple[list[Obj], list[Obj]]] = {}

    def namespace(self, ns: str) -> Namespace:
        if ns not in self._ns:
            self._ns[ns] = self._load(ns, *self._seeded.pop(ns, (None, None)))
        return self._ns[ns]

    def seed(self, ns: str, limitranges: list[KV], quotas: list[KV]) -> None:
        """Take a namespace's LimitRanges and ResourceQuotas from a read made ahead
        (``Store.read``: one round trip for all an apply reads) instead of reading them
        when the namespace is first needed."""
        if ns not in self._ns:
            self._seeded[ns] = ([_load(e.value) for e in limitranges],
                                [_load(e.value) for e in quotas])  # fmt: skip

    def _load(self, ns: str, limitranges: list[Obj] | None = None,
              quotas: list[Obj] | None = None) -> Namespace:  # fmt: skip
        state = Namespace()
        if limitranges is None:
            limitranges = namespace_objects(self.store, self.cluster, ns, KINDS["LimitRange"])
        state.limitranges = limitranges
        now = self.clock()
        if quotas is None:
            quotas = namespace_objects(self.store, self.cluster, ns, QUOTA)
        for obj in quotas:
            name = str(obj["metadata"]["name"])
            hard = dict((obj.get("spec") or {}).get("hard") or {})
            objects = quota_usage_objects(self.store, self.cluster, ns, hard)
            used = admission.used(hard, objects, now)
            status = self.store.get(status_key(self.cluster, QUOTA, ns, name))
            state.quotas.append(Quota(name, hard, used, status))
        return state

    def pod(self, pod: Obj, name: str) -> Obj:
        """The pod after defaulting and LimitRanger; raises admission.Forbidden."""
        ns = self.namespace(str(pod["metadata"].get("namespace", "default")))
        return admission.admit_pod(pod, ns.limitranges, name)

    def quota(self, info: KindInfo, obj: Obj, name: str) -> None:
        """Count a new object against its namespace's quotas; raises admission.Forbidden."""
        ns = self.namespace(str(obj["metadata"].get("namespace", "default")))
        quotas = [(q.name, q.hard, q.used) for q in ns.quotas]
        updated = admission.admit_quota(info.resource, obj, name, quotas, self.clock())
        for q in ns.quotas:
            if q.name in updated:
                q.used, q.changed = updated[q.name], True

    def writes(self) -> list[Write]:
        """The quota statuses this apply changed, guarded by the revisions read."""
        out = []
        for ns, state in sorted(self._ns.items()):
            for q in state.quotas:
                if q.changed:
                    key = status_key(self.cluster, QUOTA, ns, q.name)
                    rev = q.status.mod_revision if q.status else 0
                    out.append(Write(key, quota_status_value(q.hard, q.used), rev))
        return out


def parse_usage(values: dict[str, str] | None) -> admission.Usage:
    return {k: Quantity.parse(v) for k, v in (values or {}).items()}


def _load(raw: bytes) -> Obj:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
