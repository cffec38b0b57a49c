"""apply / get / delete of objects in one cluster's etcd.

Layout (the agent reads what we write, we read what it writes)::

    /podlab/v1/<cluster>/pods/<ns>/<name>       Pod as applied        (written here only)
    /podlab/v1/<cluster>/podstatus/<ns>/<name>  status                (written by the agent)
    /podlab/v1/<cluster>/nodes/<node>           node record           (written by agents)

``apply`` is all-or-nothing: it decides every object's fate first (admission:
LimitRange defaults and ResourceQuota; compare with what is stored, refuse
what cannot change) and then writes every changed object, and the quotas'
new usage, in one etcd transaction guarded by the revisions it read, so a
concurrent writer makes it retry instead of being overwritten. Pods are not
placed here: the controller manager's scheduler binds them (as in Kubernetes).
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from harness.api import admit, alloc, mcsapply
from harness.api.netobjects import Service
from harness.api.objects import (
    API_PREFIX,
    DEFAULT_GRACE_S,
    KINDS,
    KindInfo,
    NodeRecord,
    Pod,
    PodStatus,
    kind_prefix,
    nodes_prefix,
    object_key,
    status_key,
    status_prefix,
)
from harness.api.validate import Located, format_path
from harness.errors import LabError, Problem, UserError
from harness.kube import admission, autoscaling
from harness.kube.apps import RESTARTED_AT
from harness.store import KV, MAX_TXN_OPS, Reading, Store, Write, keys
from harness.store.keys import nodeports_prefix, serviceips_prefix

APPLY_ATTEMPTS = 3
SMALL_APPLY = 16  # up to this many objects, apply reads their keys one by one


@dataclass(frozen=True)
class Applied:
    """The outcome of applying one object: ``pod/web created``."""

    ref: str
    action: str  # created | configured | unchanged


class NotFoundError(LabError):
    """The object asked for is not in the cluster (kubectl's NotFound, exit 1)."""


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_stored(obj: Any) -> dict[str, Any]:
    """The JSON form we store: no None, no empty list or map, no resourceVersion."""
    data = _prune(obj.model_dump(mode="json", exclude_none=True, by_alias=True))
    data["metadata"].pop("resourceVersion", None)
    return data


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


class ApiClient:
    """Kubernetes-style objects of one cluster, stored in that cluster's etcd."""

    def __init__(
        self,
        store: Store,
        cluster: str,
        clock: Callable[[], float] = time.time,
        service_cidr: ipaddress.IPv4Network = alloc.DEFAULT_SERVICE_CIDR,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.clock = clock
        self.service_cidr = service_cidr
        # read a small apply's keys in one round trip; False reads them one by one, as
        # before (bench/bench_api_calls.py compares the two side by side)
        self.read_ahead = True

    # --- nodes -----------------------------------------------------------------------
    def nodes(self) -> list[NodeRecord]:
        """Node records registered by the cluster's agents, sorted by name."""
        out = []
        for entry in self.store.get_prefix(nodes_prefix(self.cluster))[0]:
            name = entry.key.rsplit("/", 1)[-1]
            try:
                record = NodeRecord.model_validate_json(entry.value)
            except ValidationError:
                record = NodeRecord(name=name)  # unreadable record: shown, never Ready
            out.append(record if record.name else record.model_copy(update={"name": name}))
        return sorted(out, key=lambda n: n.name)

    def _read_ahead(self, objects: list[Located]) -> Reading | None:
        """For a small apply, everything its plan reads in one round trip: the nodes its
        pods name, the objects' own keys, each namespace's LimitRanges and
        ResourceQuotas (issue 15: a pod's create made these four reads one request
        each before its write; at 1,000 nodes under load a request through etcd's
        gateway costs tens of milliseconds of a starved CPU). None for a large apply,
        which lists per kind instead."""
        if len(objects) > SMALL_APPLY or not self.read_ahead:
            return None
        keys = sorted({f"{nodes_prefix(self.cluster)}{n}" for n in _node_names(objects)})
        keys += [self._key(loc) for loc in objects]
        prefixes = [p for ns in _namespaces(objects) for p in self._admission_prefixes(ns)]
        if any(loc.info.kind == "Service" for loc in objects):  # the allocator's index
            prefixes += [serviceips_prefix(self.cluster), nodeports_prefix(self.cluster)]
        return self.store.read(keys, prefixes)

    def _key(self, loc: Located) -> str:
        return object_key(self.cluster, loc.info, loc.obj.metadata.namespace, loc.obj.metadata.name)

    def _admission_prefixes(self, ns: str) -> tuple[str, str]:
        return (kind_prefix(self.cluster, KINDS["LimitRange"], ns),
                kind_prefix(self.cluster, admit.QUOTA, ns))  # fmt: skip

    def _nodes_named(
        self, objects: list[Located], reading: Reading | None = None
    ) -> list[NodeRecord]:
        """The records of the nodes ``objects`` name in ``spec.nodeName``: one read each
        (or what ``reading`` holds) instead of listing every node (a thousand hollow
        nodes made each pod's apply list them all). A name not registered falls back to
        the full list, whose names the refusal offers."""
        names = _node_names(objects)
        found = []
        for name in sorted(names):
            key = f"{nodes_prefix(self.cluster)}{name}"
            entry = reading.keys[key] if reading is not None else self.store.get(key)
            if entry is None:
                return self.nodes()
            try:
                found.append(NodeRecord.model_validate_json(entry.value))
            except ValidationError:
                found.append(NodeRecord(name=name))
        return [n if n.name else n.model_copy(update={"name": m}) for n, m in
                zip(found, sorted(names), strict=True)]  # fmt: skip

    # --- apply -----------------------------------------------------------------------
    def apply(self, objects: list[Located], allow_conflict: bool = False) -> list[Applied]:
        """Write ``objects`` atomically; raise UserError (nothing written) on any problem.

        ``allow_conflict``: let a ServiceExport conflict with another cluster's
        (KEP-1645: the oldest export wins, the others are marked in conflict);
        refused by default, naming the difference.
        """
        reading = self._read_ahead(objects)
        nodes = self._nodes_named(objects, reading)
        for attempt in range(APPLY_ATTEMPTS):
            if attempt:  # a guard failed: what was read ahead is stale
                reading = self._read_ahead(objects)
            writes, results = self.plan_apply(objects, nodes, allow_conflict, reading)
            if len(writes) > MAX_TXN_OPS:  # splitting would give up all-or-nothing
                raise LabError(
                    f"{len(writes)} objects in one apply exceed etcd's limit of {MAX_TXN_OPS} "
                    "operations per transaction; split the file"
                )
            if self.store.commit(writes):
                return results
        raise LabError(f"objects in cluster {self.cluster} kept changing while applying; try again")

    def plan_apply(
        self,
        objects: list[Located],
        nodes: list[NodeRecord],
        allow_conflict: bool = False,
        reading: Reading | None = None,
    ) -> tuple[list[Write], list[Applied]]:
        """Every write an apply would make (guarded by what was read), or UserError."""
        writes, results = self._plan_apply(objects, nodes, reading)
        if any(loc.info.kind in ("Service", "ServiceExport") for loc in objects):
            problems = mcsapply.problems(self.store, self.cluster, objects, writes, allow_conflict)
            if problems:
                raise UserError(problems)
        return writes, results

    def _plan_apply(
        self, objects: list[Located], nodes: list[NodeRecord], reading: Reading | None = None
    ) -> tuple[list[Write], list[Applied]]:
        known = {n.name for n in nodes}
        kinds = {loc.info.kind for loc in objects}
        stored = self._stored(objects, kinds, reading)
        problems: list[Problem] = []
        allocator = self._allocator(reading) if "Service" in kinds else None
        admitter = admit.Admitter(self.store, self.cluster, self.clock)
        if reading is not None:
            for ns in _namespaces(objects):
                admitter.seed(ns, *(reading.prefixes[p] for p in self._admission_prefixes(ns)))
        applying = {(loc.info.kind, loc.obj.metadata.namespace, loc.obj.metadata.name)
                    for loc in objects}  # fmt: skip
        writes: list[Write] = []
        results: list[Applied] = []
        for loc in objects:
            meta = loc.obj.metadata
            key = object_key(self.cluster, loc.info, meta.namespace, meta.name)
            group = f".{loc.info.group}" if loc.info.group else ""
            ref = f"{loc.info.kind.lower()}{group}/{meta.name}"  # kubectl: deployment.apps/web
            node = getattr(getattr(loc.obj, "spec", None), "nodeName", None)
            if node and known and node not in known:
                problems.append(
                    _at(
                        loc,
                        ("spec", "nodeName"),
                        f"node {node!r} is not in cluster {self.cluster}",
                        f"use one of: {', '.join(sorted(known))}",
                    )
                )
            new = to_stored(loc.obj)
            old = stored.get(key)
            if loc.info.kind == "HorizontalPodAutoscaler":
                problems.extend(self._hpa_target(loc, stored, applying))
            if old is None:
                new = self._admit(loc, new, admitter, problems)
            if isinstance(loc.obj, Service) and allocator is not None:
                problem = allocator.assign(loc.obj, new, _load(old.value) if old else None)
                if problem:
                    problems.append(_at(loc, ("spec",), problem, "see docs/api.md#services"))
                elif old is not None:
                    gone = set(alloc.released(self.cluster, _load(old.value)))
                    gone -= set(alloc.released(self.cluster, new))
                    writes.extend(Write(k, None) for k in sorted(gone))
            action, data = self._merge(loc, new, old, problems)
            results.append(Applied(ref, action))
            if action != "unchanged":
                value = json.dumps(data, sort_keys=True).encode()
                writes.append(Write(key, value, old.mod_revision if old else 0))
        if problems:
            raise UserError(problems)
        if allocator is not None:
            writes.extend(allocator.writes)
        writes.extend(admitter.writes())
        return writes, results

    def _stored(
        self, objects: list[Located], kinds: set[str], reading: Reading | None = None
    ) -> dict[str, KV]:
        """What is stored under the keys ``objects`` would write: what ``reading`` found, a
        read per key for a small apply (a pod's apply used to list every pod of the
        cluster, O(cluster) per call), a listing per kind for a large one."""
        keys = [self._key(loc) for loc in objects]
        if reading is not None:
            return {k: e for k in keys if (e := reading.keys[k]) is not None}
        if len(keys) <= SMALL_APPLY:
            return {k: e for k in keys if (e := self.store.get(k)) is not None}
        return {
            e.key: e
            for kind in sorted(kinds)
            for e in self.store.get_prefix(kind_prefix(self.cluster, KINDS[kind]))[0]
        }

    def _admit(
        self, loc: Located, new: dict[str, Any], admitter: admit.Admitter, problems: list[Problem]
    ) -> dict[str, Any]:
        """Pod defaulting and LimitRanger (pods), then ResourceQuota (every kind)."""
        name = loc.obj.metadata.name
        try:
            if loc.info.kind == "Pod":
                new = admitter.pod(new, name)
                for i, message in admission.request_problems(new):
                    where = ("spec", "containers", i, "resources", "requests")
                    hint = "a LimitRange default limit is below this request: state a limit"
                    problems.append(_at(loc, where, message, hint))
            admitter.quota(loc.info, new, name)
        except admission.Forbidden as exc:
            hint = f"see `podlab get quota,limits -n {loc.obj.metadata.namespace}`"
            problems.append(_at(loc, ("metadata", "name"), str(exc), hint))
        return new

    def _hpa_target(
        self, loc: Located, stored: dict[str, KV], applying: set[tuple[str, str, str]]
    ) -> list[Problem]:
        """An HPA's scale target must exist (or come in the same apply)."""
        hpa = loc.obj
        assert isinstance(hpa, autoscaling.HorizontalPodAutoscaler)
        ref = hpa.spec.scaleTargetRef
        ns = loc.obj.metadata.namespace
        info = KINDS.get(ref.kind)
        if info is None or (ref.kind, ns, ref.name) in applying:
            return []
        if self.store.get(object_key(self.cluster, info, ns, ref.name)) is not None:
            return []
        return [
            _at(
                loc,
                ("spec", "scaleTargetRef", "name"),
                f'{info.resource} "{ref.name}" not found',
                f"apply the {ref.kind} first (or in the same file), or fix the name",
            )
        ]

    def _allocator(self, reading: Reading | None = None) -> alloc.Allocator:
        """ClusterIPs and node ports in use, read from their index keys (or taken from
        what the apply read ahead)."""
        ips, ports = serviceips_prefix(self.cluster), nodeports_prefix(self.cluster)
        if reading is not None and ips in reading.prefixes:
            index = [*reading.prefixes[ips], *reading.prefixes[ports]]
        else:
            index = [*self.store.get_prefix(ips)[0], *self.store.get_prefix(ports)[0]]
        return alloc.Allocator.from_entries(self.cluster, self.service_cidr, index)

    def _merge(
        self, loc: Located, new: dict[str, Any], old: KV | None, problems: list[Problem]
    ) -> tuple[str, dict[str, Any]]:
        """Decide created/configured/unchanged; keep identity; refuse spec changes of pods."""
        meta = new["metadata"]
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = rfc3339(self.clock())
            if loc.info.status_plural:
                _keep_scale_and_generation(loc.info, new, None)
            return "created", new
        prev = _load(old.value)
        pmeta = prev.get("metadata", {})
        meta["uid"] = pmeta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = pmeta.get("creationTimestamp") or rfc3339(self.clock())
        if loc.info.status_plural:
            _keep_scale_and_generation(loc.info, new, prev)
        if isinstance(loc.obj, Pod):
            if pmeta.get("deletionTimestamp"):
                problems.append(
                    _at(
                        loc,
                        ("metadata", "name"),
                        f"pod {loc.obj.metadata.name} is terminating "
                        f"(deleted at {pmeta['deletionTimestamp']})",
                        "wait until it is gone: "
                        f"podlab delete pod {loc.obj.metadata.name} -n "
                        f"{loc.obj.metadata.namespace} --wait",
                    )
                )
            if not loc.obj.spec.nodeName and prev.get("spec", {}).get("nodeName"):
                new["spec"]["nodeName"] = prev["spec"]["nodeName"]
            changed = _first_difference(prev.get("spec", {}), new["spec"], ("spec",))
            if changed is not None:
                problems.append(
                    _at(
                        loc,
                        changed,
                        "a pod's spec cannot change once created "
                        f"(changed: {format_path(changed)})",
                        "delete the pod first: "
                        f"podlab delete pod {loc.obj.metadata.name} -n "
                        f"{loc.obj.metadata.namespace} --wait",
                    )
                )
        return ("unchanged" if new == prev else "configured"), new

    # --- read ------------------------------------------------------------------------
    def list_objects(self, info: KindInfo, namespace: str | None) -> list[dict[str, Any]]:
        """Objects of a kind (in one namespace or all) with status and resourceVersion."""
        statuses = {}
        if info.kind == "Pod":
            for e in self.store.get_prefix(status_prefix(self.cluster, namespace))[0]:
                statuses[_tail(e.key)] = e
        elif info.kind == "ServiceExport":
            for e in self.store.get_prefix(export_status_key(self.cluster, namespace or "", ""))[0]:
                statuses[_tail(e.key)] = e
        elif info.status_plural:
            prefix = keys.kind_prefix(self.cluster, info.status_plural, namespace)
            for e in self.store.get_prefix(prefix)[0]:
                statuses[_tail(e.key)] = e
        items = []
        for e in self.store.get_prefix(kind_prefix(self.cluster, info, namespace))[0]:
            items.append(self._present(e, statuses.get(_tail(e.key)), info))
        return sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def get(self, info: KindInfo, namespace: str, name: str) -> dict[str, Any]:
        """One object, or NotFoundError in kubectl's words."""
        entry = self.store.get(object_key(self.cluster, info, namespace, name))
        if entry is None:
            raise NotFoundError(f'{info.plural} "{name}" not found in namespace {namespace}')
        status = None
        if info.kind == "Pod":
            status = self.store.get(status_key(self.cluster, namespace, name))
        elif info.status_plural:
            status = self.store.get(admit.status_key(self.cluster, info, namespace, name))
        elif info.kind == "ServiceExport":
            status = self.store.get(export_status_key(self.cluster, namespace, name))
        return self._present(entry, status, info)

    def _present(self, entry: KV, status: KV | None, info: KindInfo) -> dict[str, Any]:
        obj = _load(entry.value)
        obj.setdefault("metadata", {})["resourceVersion"] = str(entry.mod_revision)
        if info.status_plural:  # written by the controller manager
            obj["status"] = _load(status.value) if status else {}
        if info.kind == "ServiceExport":  # conditions stored by the cluster's mesh writer
            obj["status"] = _load(status.value) if status else {"conditions": []}
        if info.kind == "Pod":
            obj["status"] = _status(status.value if status else None)
            uid = obj["status"].pop("uid", None)
            if uid and uid != obj["metadata"].get("uid"):  # left by an earlier pod of this name
                obj["status"] = {"phase": "Pending"}
        return obj

    # --- delete ----------------------------------------------------------------------
    def delete(self, info: KindInfo, namespace: str, name: str, grace_s: int | None = None) -> bool:
        """Delete an object; True if it existed. A pod's orphaned status goes too.

        A pod its agent runs is deleted gracefully, as the kubelet does: the object
        gets ``deletionTimestamp`` and ``deletionGracePeriodSeconds`` (``grace_s``,
        else the pod's ``terminationGracePeriodSeconds``, else 30), which takes it
        out of every Service at once; its agent runs the preStop sleep, sends
        SIGTERM, kills what is left when the grace period ends, and then removes
        the object. ``grace_s=0``, or a pod no agent has reported on, goes at once.
        """
        key = object_key(self.cluster, info, namespace, name)
        if info.kind == "Pod" and grace_s != 0:
            skey = status_key(self.cluster, namespace, name)
            if self.read_ahead:  # one round trip (issue 15)
                both = self.store.read([key, skey])
                entry, status = both.keys[key], both.keys[skey]
            else:
                entry, status = self.store.get(key), self.store.get(skey)
            if entry is None:
                self.store.delete(skey)
                return False
            pod = _load(entry.value)
            meta = pod.setdefault("metadata", {})
            if meta.get("deletionTimestamp"):
                return True  # already terminating: its agent finishes the job
            if status is not None and _load(status.value).get("uid") == meta.get("uid"):
                grace = grace_s
                if grace is None:
                    grace = pod.get("spec", {}).get("terminationGracePeriodSeconds")
                meta["deletionTimestamp"] = rfc3339(self.clock())
                meta["deletionGracePeriodSeconds"] = DEFAULT_GRACE_S if grace is None else grace
                value = json.dumps(pod, sort_keys=True).encode()
                if self.store.commit([Write(key, value, entry.mod_revision)]):
                    return True
                return self.delete(info, namespace, name, grace_s)  # it changed meanwhile
        if info.kind == "Service":
            entry = self.store.get(key)
            if entry is None:
                return False
            frees = alloc.released(self.cluster, _load(entry.value))
            writes = [Write(key, None, entry.mod_revision), *(Write(k, None) for k in frees)]
            return self.store.commit(writes)
        existed = self.store.delete(key)
        if not existed and info.kind == "Pod":
            self.store.delete(status_key(self.cluster, namespace, name))
        if info.status_plural:
            self.store.delete(admit.status_key(self.cluster, info, namespace, name))
        return existed

    def wait_gone(self, refs: list[tuple[str, str]], timeout_s: float) -> list[str]:
        """Wait until the agent removed the status of each (ns, name) pod; return stragglers."""
        deadline = time.monotonic() + timeout_s
        left: list[tuple[str, str]] = list(refs)
        while left:
            left = [r for r in left if self.store.get(status_key(self.cluster, *r)) is not None]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        return [f"{ns}/{name}" for ns, name in left]


def _node_names(objects: list[Located]) -> set[str]:
    return {
        n for loc in objects if (n := getattr(getattr(loc.obj, "spec", None), "nodeName", None))
    }


def _namespaces(objects: list[Located]) -> list[str]:
    """The namespaces admission reads for ``objects`` (its own default: ``default``)."""
    return sorted(
        {loc.obj.metadata.namespace or "default" for loc in objects if loc.info.namespaced}
    )


def _keep_scale_and_generation(
    info: KindInfo, new: dict[str, Any], prev: dict[str, Any] | None
) -> None:
    """``metadata.generation`` counts spec changes (1 at creation), as the apiserver's
    does; a Deployment or ReplicaSet applied without ``replicas`` keeps the stored
    size (set by ``podlab scale`` or an HPA; 1 at creation), as ``kubectl apply``
    leaves a field it never set."""
    spec = new.setdefault("spec", {})
    pspec = (prev or {}).get("spec", {})
    if info.kind in ("Deployment", "ReplicaSet") and "replicas" not in spec:
        spec["replicas"] = pspec.get("replicas", 1)
    if info.kind == "Deployment":  # set by `podlab rollout pause|restart`, kept likewise
        if pspec.get("paused") and "paused" not in spec:
            spec["paused"] = True
        restarted = _template_annotations(pspec).get(RESTARTED_AT)
        if restarted and RESTARTED_AT not in _template_annotations(spec):
            template = spec.setdefault("template", {}).setdefault("metadata", {})
            template.setdefault("annotations", {})[RESTARTED_AT] = restarted
    if prev is None:
        new["metadata"]["generation"] = 1
        return
    generation = int(prev.get("metadata", {}).get("generation") or 1)
    new["metadata"]["generation"] = generation + (spec != prev.get("spec"))


def export_status_key(cluster: str, namespace: str, name: str) -> str:
    """Where the cluster's mesh writer stores a ServiceExport's conditions (a prefix
    when ``name`` is empty: one namespace, or every namespace too)."""
    base = f"{API_PREFIX}/{cluster}/serviceexportstatus/"
    return f"{base}{namespace}/{name}" if namespace else base


def _template_annotations(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {})


def _status(raw: bytes | None) -> dict[str, Any]:
    """The agent's status JSON as a dict; a missing or unreadable one is Pending/Unknown."""
    if raw is None:
        return {"phase": "Pending"}
    try:
        return PodStatus.model_validate_json(raw).model_dump(mode="json", exclude_none=True)
    except ValidationError:
        return {"phase": "Unknown", "message": "unreadable status from the node agent"}


def _load(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _tail(key: str) -> str:
    """``…/<ns>/<name>`` → ``<ns>/<name>``."""
    return "/".join(key.rsplit("/", 2)[-2:])


def _first_difference(old: Any, new: Any, path: tuple[str | int, ...]) -> Any:
    """The path of the first place where ``new`` differs from ``old``, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            found = _first_difference(old.get(k), new.get(k), (*path, k))
            if found is not None:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = _first_difference(a, b, (*path, i))
            if found is not None:
                return found
        return None
    return None if old == new else path


def _at(loc: Located, path: tuple[str | int, ...], message: str, hint: str) -> Problem:
    ref = f"{loc.info.kind.lower()}/{loc.obj.metadata.name}"
    where = f"document {loc.doc.index} ({ref}): {format_path(path)}"
    return Problem(loc.doc.file, where, message, hint, loc.doc.line(path))
