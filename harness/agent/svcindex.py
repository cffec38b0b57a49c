"""The services controller's record of etcd: indexed objects, and what each change dirtied.

Felix's pattern (STYLE.md): a watch event only *records* — the new object goes
into a per-cluster index, and the change marks what it can affect (``Dirt``):
the service names (namespace, name) whose endpoints, DNS records or probe
targets may move, the policy table, the MCS export resolution, local pods'
DNS records. The worker later recomputes only that (``svcderive.Derived``)
and flushes once. A status flip of one backend among 1,000 thus costs the
work of one service, not of every service times every pod.

What dirties what:

- a Service (any cluster) → its name; and the export resolution (MCS reads
  the exported Services' ports and types);
- a Pod or its status (any cluster) → the names of that cluster's Services in
  the pod's namespace whose selector matches its labels (old or new): a remote
  cluster's Service of a name is the local one's global twin, so the name is
  the unit; the policy table when the pod's labels, node, named ports or
  address changed; a local pod's ``pod.cluster.local`` record when its address
  did;
- a ServiceExport (any cluster) → the export resolution (which dirties the
  names whose import changed) and its name;
- a stored ServiceImport → its name (its ClusterSetIP);
- NetworkPolicies and Namespaces → the policy table;
- a local node dying or coming back (the controller's liveness verdict,
  ``nodes_moved``) → the names of the Services selecting its pods;
- a mirrored node record whose address changed, or that came or went →
  everything (rare; remote heartbeats change nothing);
- the syncer's status record, export conditions → a pass with nothing to
  recompute (the writer compares what it stored).

Keys are relative to ``/podlab/v1/<cluster>/`` (``views.split_key``). Not
thread-safe: the controller records under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.agent.mesh.views import VIEW_KINDS, ClusterView, split_key

Obj = dict[str, Any]
Ref = tuple[str, str]  # (namespace, name)
#: kinds of the local cluster the controller reads beyond the views' own
STATE_KINDS = ("policies", "namespaces", "serviceimports", "serviceexportstatus")


def _labels(pod: Obj | None) -> dict[str, str] | None:
    return None if pod is None else dict((pod.get("metadata") or {}).get("labels") or {})


def _selects(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    if not selector or labels is None:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def _policy_sig(pod: Obj | None) -> Any:
    """What of a Pod object the policy table reads (labels, node, named ports)."""
    if pod is None:
        return None
    spec = pod.get("spec") or {}
    ports = [c.get("ports") for c in spec.get("containers") or []]
    return (_labels(pod), spec.get("nodeName"), repr(ports))


def _selector(svc: Obj | None) -> dict[str, Any]:
    return ((svc or {}).get("spec") or {}).get("selector") or {}


def _sel_key(selector: dict[str, Any]) -> tuple[str, str] | None:
    """The one (label, value) a Service is filed under for ``selecting``: a pod can only
    match it if it carries that pair. None: not indexable (a non-string value)."""
    if not all(isinstance(v, str) for v in selector.values()):
        return None
    return min(selector.items())


def _node(pod: Obj | None) -> str | None:
    return None if pod is None else (pod.get("spec") or {}).get("nodeName")


def _ip(status: Obj | None) -> Any:
    return None if status is None else status.get("podIP")


@dataclass
class Dirt:
    """What changed since the last pass (``everything`` means: recompute all)."""

    everything: bool = True
    refs: set[Ref] = field(default_factory=set)
    exports: bool = True
    policy: bool = True
    pod_dns: set[Ref] = field(default_factory=set)  # local pods whose pod record may move

    def any(self) -> bool:
        return self.everything or self.exports or self.policy or bool(self.refs or self.pod_dns)


class ClusterIndex:
    """One cluster's objects (local, or a remote one as mirrored), indexed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.services: dict[Ref, Obj] = {}
        self.by_ns: dict[str, set[str]] = {}  # namespace → its Services' names
        self.pods: dict[str, dict[str, Obj]] = {}  # namespace → name → Pod
        # namespace → (label, value) → names of its pods carrying it: a Service's pods are
        # the intersection for its selector, not a scan of the namespace per Service
        # (at 150 Services over 3,000 pods the scan held the interpreter for most of a
        # pass, and the agent's DNS answers, a thread of the same process, waited)
        self.by_label: dict[str, dict[tuple[str, str], set[str]]] = {}
        # namespace → (label, value) → names of its Services whose selector holds that pair
        # (its smallest): a pod event looks only at the Services it could match, not at
        # every Service of the namespace (1,000 Services × 3,000 pod deletes held the
        # controller's lock for minutes); ``by_ns_scan``: selectors not indexable
        self.by_selector: dict[str, dict[tuple[str, str], set[str]]] = {}
        self.by_ns_scan: dict[str, set[str]] = {}
        self.by_node: dict[str, set[Ref]] = {}  # node → its pods (liveness moves them)
        self._order: dict[Ref, int] = {}  # a pod's first recording: views list pods in it
        self._seq = 0
        self.statuses: dict[Ref, Obj] = {}
        self.nodes: dict[str, Obj] = {}
        self.exports: dict[Ref, Obj] = {}
        self.status: Obj | None = None  # the syncer's record (remote clusters)

    def pod(self, ref: Ref) -> Obj | None:
        return self.pods.get(ref[0], {}).get(ref[1])

    def selecting(self, ns: str, *labels: dict[str, str] | None) -> set[Ref]:
        """This cluster's Services in ``ns`` whose selector matches any of ``labels``."""
        index = self.by_selector.get(ns, {})
        candidates = set(self.by_ns_scan.get(ns, ()))
        for lab in labels:
            for pair in (lab or {}).items():
                if isinstance(pair[1], str) and pair in index:
                    candidates |= index[pair]
        out = set()
        for name in candidates:
            sel = _selector(self.services[(ns, name)])
            if any(_selects(sel, lab) for lab in labels):
                out.add((ns, name))
        return out

    def on_nodes(self, nodes: set[str]) -> set[Ref]:
        """The Services selecting a pod bound to one of ``nodes`` (their liveness moved)."""
        out: set[Ref] = set()
        for node in nodes:
            for ref in self.by_node.get(node, ()):
                out |= self.selecting(ref[0], _labels(self.pod(ref)))
        return out

    def narrow(self, ref: Ref) -> ClusterView:
        """A view holding only what this cluster's Service ``ref`` can use: the Service,
        the pods of its namespace its selector matches, their statuses, every node.
        ``globalsvc``, ``mcs`` and ``desired.probe_targets`` give the same answer for
        ``ref`` on it as on the whole view (they select by the same rule)."""
        svc = self.services.get(ref)
        sel = ((svc or {}).get("spec") or {}).get("selector") or {}
        pods = self.matching(ref[0], sel)
        statuses = {}
        for p in pods:
            key = (ref[0], p["metadata"]["name"])
            if key in self.statuses:
                statuses[key] = self.statuses[key]
        return ClusterView(
            self.name,
            {ref: svc} if svc is not None else {},
            pods,
            statuses,
            self.nodes,
            {ref: self.exports[ref]} if ref in self.exports else {},
            self.status,
        )

    def matching(self, ns: str, selector: dict[str, str]) -> list[Obj]:
        """The pods of ``ns`` that ``selector`` selects (none for an empty one), in the
        order they were first recorded: the label index's intersection."""
        if not selector:
            return []
        by_name = self.pods.get(ns, {})
        if not all(isinstance(v, str) for v in selector.values()):  # not indexed: scan
            return [p for p in by_name.values() if _selects(selector, _labels(p))]
        index = self.by_label.get(ns, {})
        sets = sorted((index.get((k, v), set()) for k, v in selector.items()), key=len)
        names = set(sets[0]).intersection(*sets[1:])
        return [by_name[n] for n in sorted(names, key=lambda n: self._order[(ns, n)])]

    def _index_labels(self, ref: Ref, labels: dict[str, str] | None, add: bool) -> None:
        index = self.by_label.setdefault(ref[0], {})
        for key in (labels or {}).items():
            if not isinstance(key[1], str):  # never equal to an indexed (string) selector
                continue
            if add:
                index.setdefault(key, set()).add(ref[1])
            elif key in index:
                index[key].discard(ref[1])
                if not index[key]:
                    del index[key]

    def _index_selector(self, ref: Ref, svc: Obj | None, add: bool) -> None:
        selector = _selector(svc)
        if svc is None or not selector:  # selects no pod: filed nowhere
            return
        key = _sel_key(selector)
        ns, name = ref
        if key is None:
            names = self.by_ns_scan.setdefault(ns, set())
        else:
            names = self.by_selector.setdefault(ns, {}).setdefault(key, set())
        if add:
            names.add(name)
            return
        names.discard(name)
        if not names:
            if key is None:
                del self.by_ns_scan[ns]
            else:
                del self.by_selector[ns][key]

    def _index_node(self, ref: Ref, pod: Obj | None, add: bool) -> None:
        node = _node(pod)
        if not node:
            return
        if add:
            self.by_node.setdefault(node, set()).add(ref)
        elif node in self.by_node:
            self.by_node[node].discard(ref)
            if not self.by_node[node]:
                del self.by_node[node]

    def view(self) -> ClusterView:
        """The whole cluster as a view (policy, MCS resolution)."""
        pods = [p for by_name in self.pods.values() for p in by_name.values()]
        return ClusterView(
            self.name, self.services, pods, self.statuses, self.nodes, self.exports, self.status
        )

    # --- recording (each returns what it dirtied) ---------------------------------------
    def put_service(self, ref: Ref, obj: Obj | None) -> None:
        self._index_selector(ref, self.services.get(ref), add=False)
        self._index_selector(ref, obj, add=True)
        if obj is None:
            self.services.pop(ref, None)
            self.by_ns.get(ref[0], set()).discard(ref[1])
        else:
            self.services[ref] = obj
            self.by_ns.setdefault(ref[0], set()).add(ref[1])

    def put_pod(self, ref: Ref, obj: Obj | None) -> tuple[set[Ref], bool]:
        """(Service names the change touches, whether policy inputs moved)."""
        old = self.pod(ref)
        self._index_labels(ref, _labels(old), add=False)
        self._index_node(ref, old, add=False)
        self._index_node(ref, obj, add=True)
        if obj is None:
            self.pods.get(ref[0], {}).pop(ref[1], None)
            self._order.pop(ref, None)
        else:
            self.pods.setdefault(ref[0], {})[ref[1]] = obj
            self._index_labels(ref, _labels(obj), add=True)
            if ref not in self._order:
                self._seq += 1
                self._order[ref] = self._seq
        refs = self.selecting(ref[0], _labels(old), _labels(obj))
        return refs, _policy_sig(old) != _policy_sig(obj)

    def put_status(self, ref: Ref, obj: Obj | None) -> tuple[set[Ref], bool]:
        """(Service names selecting the pod, whether its address changed)."""
        old = self.statuses.get(ref)
        if obj is None:
            self.statuses.pop(ref, None)
        else:
            self.statuses[ref] = obj
        return self.selecting(ref[0], _labels(self.pod(ref))), _ip(old) != _ip(obj)


class ServicesIndex:
    """Every cluster's index plus the local cluster's own kinds; accumulates ``Dirt``."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.local = ClusterIndex(cluster)
        self.remotes: dict[str, ClusterIndex] = {}
        self.policies: dict[Ref, Obj] = {}
        self.namespaces: dict[str, Obj] = {}
        self.imports: dict[Ref, Obj] = {}  # stored ServiceImports (this cluster's writer)
        self.export_status: dict[Ref, Obj] = {}
        self.dirt = Dirt()

    def take(self) -> Dirt:
        """What changed since the last call, and start afresh."""
        dirt, self.dirt = self.dirt, Dirt(everything=False, exports=False, policy=False)
        return dirt

    def nodes_moved(self, nodes: set[str]) -> None:
        """Local ``nodes`` died or came back: dirty the Services selecting their pods
        (a dead node's pods are served NotReady; nothing else reads liveness)."""
        self.dirt.refs |= self.local.on_nodes(nodes)

    def remote_list(self) -> list[ClusterIndex]:
        return [self.remotes[c] for c in sorted(self.remotes)]

    def record(self, rel: str, obj: Obj | None) -> bool:
        """One put (``obj``) or delete (None) of a key relative to the cluster prefix;
        True when it needs a programming pass."""
        cluster, kind, parts = split_key(rel)
        if cluster is None and kind in STATE_KINDS:
            return self._state(kind, parts, obj)
        if cluster == self.cluster:
            return False  # a syncer never mirrors us to ourselves; ignore if one did
        if kind not in VIEW_KINDS and not (cluster and kind == "status" and not parts):
            return False
        if cluster is None:
            idx = self.local
        else:
            idx = self.remotes.setdefault(cluster, ClusterIndex(cluster))
        if kind == "status":
            idx.status = obj
            return False  # the syncer's record: shown by `mesh status`, programs nothing
        if kind == "nodes":
            return self._node(idx, parts, obj) if cluster is not None else False
        if len(parts) != 2:
            return False
        return self._object(idx, kind, (parts[0], parts[1]), obj, local=cluster is None)

    def _object(self, idx: ClusterIndex, kind: str, ref: Ref, obj: Obj | None, local: bool) -> bool:
        d = self.dirt
        if kind == "services":
            idx.put_service(ref, obj)
            d.refs.add(ref)
            d.exports = True
        elif kind == "serviceexports":
            if obj is None:
                idx.exports.pop(ref, None)
            else:
                idx.exports[ref] = obj
            d.refs.add(ref)
            d.exports = True
        elif kind == "pods":
            refs, policy = idx.put_pod(ref, obj)
            d.refs |= refs
            d.policy |= policy
            if local:
                d.pod_dns.add(ref)
        elif kind == "podstatus":
            refs, moved = idx.put_status(ref, obj)
            d.refs |= refs
            d.policy |= moved
            if local and moved:
                d.pod_dns.add(ref)
        return True

    def _node(self, idx: ClusterIndex, parts: list[str], obj: Obj | None) -> bool:
        """A mirrored node record: news only when it came, went or moved (a remote
        heartbeat rewrites it every few seconds and changes nothing here)."""
        if len(parts) != 1:
            return False
        old = idx.nodes.get(parts[0])
        if obj is None:
            idx.nodes.pop(parts[0], None)
        else:
            idx.nodes[parts[0]] = obj
        news = (old is None) != (obj is None) or (
            old is not None and obj is not None and old.get("underlayIP") != obj.get("underlayIP")
        )
        self.dirt.everything |= news
        return news

    def _state(self, kind: str, parts: list[str], obj: Obj | None) -> bool:
        if kind == "namespaces":
            if len(parts) != 1:
                return False
            table: dict[Any, Obj] = self.namespaces
            key: Any = parts[0]
        else:
            if len(parts) != 2:
                return False
            table = {
                "policies": self.policies,
                "serviceimports": self.imports,
                "serviceexportstatus": self.export_status,
            }[kind]
            key = (parts[0], parts[1])
        if obj is None:
            table.pop(key, None)
        else:
            table[key] = obj
        if kind in ("policies", "namespaces"):
            self.dirt.policy = True
        elif kind == "serviceimports":
            self.dirt.refs.add(key)
        return True  # export conditions: the writer's pass compares what it stored
