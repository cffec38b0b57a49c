"""NetworkPolicy → nftables (Felix's job), enforced for the pods of this node.

Kernel objects, in table ``inet podlab-policy`` of the node's namespace:

- chain ``forward`` (filter hook forward, priority filter — after the service
  proxy's DNAT, so policy sees real pod addresses): ``ct state
  established,related accept``, then ``ip saddr vmap @egress-pods`` and
  ``ip daddr vmap @ingress-pods``. Registered only while some policy selects a
  pod of this node: with both maps empty it would accept every packet anyway,
  and every forwarded packet of the node would still pass it (one base-chain
  pass per packet; docs/throughput.md, item 8). A connection opened before the
  first such policy is accepted as established once the chain appears, as it
  would have been with the chain there all along (conntrack follows every flow
  of the node for the NAT tables either way);
- verdict maps ``egress-pods`` / ``ingress-pods``: a local pod's address →
  ``jump eg-<id>`` / ``jump in-<id>``, present only when some policy selects
  the pod for that direction (Kubernetes: unselected pods are open);
- per pod and direction a chain of allow rules (``… return``) ending in
  ``drop`` — drops, not rejects, as Calico does.

Both pod interface styles pass the ``forward`` hook: routed ``cali*`` veths
by routing, bridged ``cni0`` ports because bridge netfilter
(``net.bridge.bridge-nf-call-iptables``, per namespace, set by the applier)
hands bridged IPv4 frames to the inet hooks; matching is by pod address, so
the interface style does not matter. Traffic between a pod and its own node
(kubelet probes, cluster DNS on the node) is not policed, as Calico's default.
Ingress is enforced on the destination's node, egress on the source's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.exec import run
from harness.kube.labels import matches as selector_matches

TABLE = "podlab-policy"
T = f"inet {TABLE}"
NS_NAME_LABEL = "kubernetes.io/metadata.name"  # every namespace carries it (Kubernetes ≥ 1.21)


#: Every pod's identity carries its cluster (Cilium: io.cilium.k8s.policy.cluster).
CLUSTER_LABEL = "podlab.io/cluster"


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    ip: str
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    ports: tuple[tuple[str, str, int], ...] = ()  # (name, protocol, number)
    remote: bool = False  # a pod of another cluster of the mesh


def names_cluster(peer: dict[str, Any]) -> bool:
    """Whether a peer's podSelector says which cluster(s) it means.

    A selector that does not is about the local cluster only (Cilium's
    ``policy-default-local-cluster``, its default since 1.19): a policy written
    for one cluster never opens it to the whole mesh by accident.
    """
    sel = peer.get("podSelector") or {}
    if CLUSTER_LABEL in (sel.get("matchLabels") or {}):
        return True
    return any(r.get("key") == CLUSTER_LABEL for r in sel.get("matchExpressions") or [])


def _types(spec: dict[str, Any]) -> list[str]:
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _peer_ips(
    peer: dict[str, Any], policy_ns: str, pods: list[PodInfo], ns_labels: dict[str, dict[str, str]]
) -> set[str]:
    """Pod addresses a podSelector/namespaceSelector peer stands for."""
    out = set()
    mesh_wide = names_cluster(peer)
    for p in pods:
        if p.remote and not mesh_wide:
            continue
        if "namespaceSelector" in peer:
            labels = {NS_NAME_LABEL: p.namespace, **ns_labels.get(p.namespace, {})}
            if not selector_matches(peer["namespaceSelector"], labels):
                continue
        elif p.namespace != policy_ns:
            continue
        if "podSelector" in peer and not selector_matches(peer["podSelector"], p.labels):
            continue
        out.add(p.ip)
    return out


def _port_matches(ports: list[dict[str, Any]], resolve: list[PodInfo]) -> list[str] | None:
    """nft matches for a rule's ports; [] = nothing can match, None = every port."""
    if not ports:
        return None
    out = []
    for p in ports:
        proto = p.get("protocol", "TCP").lower()
        port, end = p.get("port"), p.get("endPort")
        if port is None:
            out.append(f"meta l4proto {proto}")
        elif isinstance(port, int):
            span = f"{port}-{end}" if end else str(port)
            out.append(f"meta l4proto {proto} th dport {span}")
        else:  # a named port: the numbers the pods in question give that name
            nums = sorted(
                {
                    n
                    for pod in resolve
                    for (nm, pr, n) in pod.ports
                    if nm == port and pr.lower() == proto
                }
            )
            if nums:
                out.append(f"meta l4proto {proto} th dport {{ {', '.join(map(str, nums))} }}")
    return out


def _rule_lines(
    chain: str,
    rule: dict[str, Any],
    direction: str,
    ctx: tuple[str, list[PodInfo], dict[str, dict[str, str]]],
    target: PodInfo,
    cache: dict[tuple[str, str], list[str]],
) -> list[str]:
    """``… return`` lines for one ingress/egress rule of one policy, for one pod."""
    policy_ns, pods, ns_labels = ctx
    field_ = "saddr" if direction == "Ingress" else "daddr"
    peers = rule.get("from" if direction == "Ingress" else "to") or []
    resolve = [target] if direction == "Ingress" else pods
    ports = _port_matches(rule.get("ports") or [], resolve)
    peer_matches: list[str] = []
    if not peers:
        peer_matches = [""]
    for peer in peers:
        block = peer.get("ipBlock")
        if block:
            m = f"ip {field_} {block['cidr']}"
            if block.get("except"):
                m += f" ip {field_} != {{ {', '.join(block['except'])} }}"
            peer_matches.append(m)
            continue
        key = (policy_ns, json.dumps(peer, sort_keys=True))
        if key not in cache:  # a peer's addresses are the same for every pod it guards
            cache[key] = sorted(_peer_ips(peer, policy_ns, pods, ns_labels))
        ips = cache[key]
        if ips:
            peer_matches.append(f"ip {field_} {{ {', '.join(ips)} }}")
    lines = []
    for pm in peer_matches:
        for port in ports if ports is not None else [""]:
            body = " ".join(x for x in (pm, port) if x)
            lines.append(f"add rule {T} {chain} {body} return".replace("  ", " "))
    return lines


def _chain_id(pod: PodInfo) -> str:
    return hashlib.sha256(f"{pod.namespace}/{pod.name}".encode()).hexdigest()[:16]


def ruleset(
    policies: Iterable[dict[str, Any]],
    pods: list[PodInfo],
    ns_labels: dict[str, dict[str, str]],
    local: set[tuple[str, str]] | None = None,
) -> str:
    """The whole table for this node's pods (``local``; None = every pod given)."""
    policies = list(policies)
    head = [
        f"add table {T}",
        f"delete table {T}",
        f"add table {T}",
        f"add map {T} ingress-pods {{ type ipv4_addr : verdict ; }}",
        f"add map {T} egress-pods {{ type ipv4_addr : verdict ; }}",
    ]
    hook = [
        f"add chain {T} forward {{ type filter hook forward priority filter ; policy accept ; }}",
        f"add rule {T} forward ct state established,related accept",
        f"add rule {T} forward ip saddr vmap @egress-pods",
        f"add rule {T} forward ip daddr vmap @ingress-pods",
    ]
    body: list[str] = []
    cache: dict[tuple[str, str], list[str]] = {}
    elements: dict[str, list[str]] = {"Ingress": [], "Egress": []}
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        if local is not None and (pod.namespace, pod.name) not in local:
            continue
        for direction, prefix in (("Ingress", "in"), ("Egress", "eg")):
            chain = f"{prefix}-{_chain_id(pod)}"
            rules: list[str] = []
            selected = False
            for pol in policies:
                meta, spec = pol["metadata"], pol.get("spec", {})
                ns = meta.get("namespace", "default")
                if ns != pod.namespace or direction not in _types(spec):
                    continue
                if not selector_matches(spec.get("podSelector"), pod.labels):
                    continue
                selected = True
                for rule in spec.get(direction.lower()) or []:
                    ctx = (ns, pods, ns_labels)
                    rules += _rule_lines(chain, rule, direction, ctx, pod, cache)
            if selected:
                body += [f"add chain {T} {chain}", *rules, f"add rule {T} {chain} drop"]
                elements[direction].append(f"{pod.ip} : jump {chain}")
    for direction, mp in (("Ingress", "ingress-pods"), ("Egress", "egress-pods")):
        if elements[direction]:
            body.append(f"add element {T} {mp} {{ {', '.join(elements[direction])} }}")
    any_selected = bool(elements["Ingress"] or elements["Egress"])  # else no hook (docstring)
    return "\n".join(head + (hook if any_selected else []) + body) + "\n"


def pods_from_store(
    pods: Iterable[dict[str, Any]],
    statuses: dict[tuple[str, str], dict[str, Any]],
    cluster: str | None = None,
) -> list[PodInfo]:
    """Stored pods with an address, as the policy builder sees them (labelled with
    ``podlab.io/cluster: <cluster>`` when the cluster is given)."""
    own = {CLUSTER_LABEL: cluster} if cluster else {}
    out = []
    for pod in pods:
        meta = pod["metadata"]
        ns = meta.get("namespace", "default")
        ip = (statuses.get((ns, meta["name"])) or {}).get("podIP")
        if not ip:
            continue
        ports = tuple(
            (cp["name"], cp.get("protocol", "TCP"), int(cp["containerPort"]))
            for c in pod.get("spec", {}).get("containers", [])
            for cp in c.get("ports", [])
            if cp.get("name")
        )
        labels = {**dict(meta.get("labels", {})), **own}
        out.append(PodInfo(ns, meta["name"], ip, labels, ports))
    return out


def remote_pods(
    cluster: str,
    pods: Iterable[dict[str, Any]],
    statuses: dict[tuple[str, str], dict[str, Any]],
) -> list[PodInfo]:
    """Pods of another cluster of the mesh (as the syncer mirrored them), labelled with
    their cluster. Named ``<cluster>/<name>`` so they never alias a local pod."""
    return [
        PodInfo(p.namespace, f"{cluster}/{p.name}", p.ip, p.labels, p.ports, remote=True)
        for p in pods_from_store(pods, statuses, cluster)
    ]


class PolicyEnforcer:
    """Applies the whole table atomically on every change (policies are few)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.last: str | None = None

    def apply(self, doc: str, force: bool = False) -> bool:
        """Load ``doc`` unless it is what we loaded last; True if the kernel changed."""
        if doc == self.last and not force:
            return False
        # Without br_netfilter (loaded for bridged pods, pods.py) there is no such key.
        sysctl = ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]
        run(sysctl, netns=self.netns, check=False)
        run(["nft", "-f", "-"], timeout=60, netns=self.netns, input=doc)
        self.last = doc
        return True

    def close(self) -> None:
        run(["nft", "-f", "-"], netns=self.netns, input=f"add table {T}\ndelete table {T}\n")
        self.last = None
