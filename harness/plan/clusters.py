"""Clusters from ``podlab.*`` labels: roles, ids, CIDRs and datapath settings.

A cluster's settings usually sit on a containerlab group its nodes join; every
node of a cluster must end up agreeing on them.
"""

from __future__ import annotations

import difflib
from ipaddress import IPv4Network

from harness.errors import Collector
from harness.plan.mesh import check_meshes
from harness.plan.model import (
    DEFAULT_NODE_PREFIX,
    ENCRYPTIONS,
    MODES,
    PROXY_MODES,
    ROLES,
    ClusterPlan,
    Segment,
)
from harness.topology import NodeSpec, Topology

NODE_LABELS = (
    "podlab.cluster",
    "podlab.role",
    "podlab.route-reflector",
    "podlab.vm-memory",  # vm backend: guest RAM in MiB (512 control plane, else 256)
    "podlab.vm-cpus",  # vm backend: guest vCPUs (1)
    "podlab.vm-accel",  # vm backend: auto | kvm | tcg (auto)
)
CLUSTER_LABELS = (
    "podlab.cluster-id",
    "podlab.pod-cidr",
    "podlab.service-cidr",
    "podlab.mode",
    "podlab.encryption",
    "podlab.proxy-mode",
    "podlab.node-prefix",
    "podlab.ipvs-scheduler",
    "podlab.mesh",
    "podlab.hollow-nodes",  # hollow nodes of the cluster (docs/hollow.md)
)
HOLLOW_MODES = ("vxlan", "host-gw")  # the modes whose peer data a hollow node publishes
MAX_HOLLOW = 65535
KNOWN_LABELS = NODE_LABELS + CLUSTER_LABELS
CLUSTER_ROLES = ("control-plane", "worker")


def node_role(node: NodeSpec, topo: Topology, c: Collector) -> str:
    """The node's role; also reports unknown ``podlab.*`` labels (usually typos)."""
    for key in node.labels:
        if key.startswith("podlab.") and key not in KNOWN_LABELS:
            near = difflib.get_close_matches(key, KNOWN_LABELS, n=1)
            hint = f"did you mean {near[0]}?" if near else f"known: {', '.join(KNOWN_LABELS)}"
            c.add(
                f"node {node.shown} label {key}", "unknown podlab label", hint, node.label_line(key)
            )
    role = node.labels.get("podlab.role")
    cluster = node.labels.get("podlab.cluster")
    if topo.plain:
        return "host"  # a plain containerlab file: every node a plain host
    if role is None:
        if cluster is None:
            c.add(
                f"node {node.shown}",
                "is in no cluster and has no role",
                "set label podlab.cluster (usually on its group), or podlab.role: router|host "
                "(a file without any podlab.* label is a plain containerlab lab)",
                node.line,
            )
            return "host"
        return "worker"
    if role not in ROLES:
        c.add(
            f"node {node.shown} label podlab.role",
            f"unknown role {role!r}",
            f"use one of {', '.join(ROLES)}",
            node.label_line("podlab.role"),
        )
        return "host"
    if role in CLUSTER_ROLES and cluster is None:
        c.add(
            f"node {node.shown}",
            f"role {role} needs a cluster",
            "set label podlab.cluster on the node or its group",
            node.line,
        )
    return role


def build_clusters(
    topo: Topology, roles: dict[str, str], segments: dict[str, Segment], c: Collector
) -> dict[str, ClusterPlan]:
    """One ClusterPlan per ``podlab.cluster`` value, with defaults filled in."""
    members: dict[str, list[NodeSpec]] = {}
    for name, role in roles.items():
        node = topo.nodes[name]
        if role in CLUSTER_ROLES and "podlab.cluster" in node.labels:
            members.setdefault(node.labels["podlab.cluster"], []).append(node)
    clusters: dict[str, ClusterPlan] = {}
    lines: dict[str, dict[str, int | None]] = {}
    ids: dict[int, str] = {}
    for index, (cname, nodes) in enumerate(members.items(), start=1):
        settings = _agree(cname, nodes, c)

        def at(key: str, first: NodeSpec = nodes[0]) -> int | None:
            return first.label_line(key)

        cid = _int(
            settings.get("podlab.cluster-id", str(index)),
            f"cluster {cname} cluster-id",
            1,
            255,
            c,
            at("podlab.cluster-id"),
        )
        if cid in ids:
            c.add(
                f"cluster {cname} label podlab.cluster-id",
                f"cluster id {cid} is also used by cluster {ids[cid]}",
                "give every cluster a unique podlab.cluster-id (1-255)",
                at("podlab.cluster-id"),
            )
        ids[cid] = cname
        prefix = _int(
            settings.get("podlab.node-prefix", str(DEFAULT_NODE_PREFIX)),
            f"cluster {cname} node-prefix",
            16,
            28,
            c,
            at("podlab.node-prefix"),
        )
        pod = _net(
            settings.get("podlab.pod-cidr", f"10.{243 + cid}.0.0/16"),
            f"cluster {cname} label podlab.pod-cidr",
            c,
            at("podlab.pod-cidr"),
        )
        svc = _net(
            settings.get("podlab.service-cidr", f"10.{95 + cid}.0.0/16"),
            f"cluster {cname} label podlab.service-cidr",
            c,
            at("podlab.service-cidr"),
        )
        if pod is not None and pod.prefixlen > prefix:
            c.add(
                f"cluster {cname} label podlab.pod-cidr",
                f"pod CIDR {pod} is smaller than one node subnet (/{prefix})",
                f"use a pod CIDR of /{prefix - 2} or larger",
                at("podlab.pod-cidr"),
            )
        elif pod is not None and 2 ** (prefix - pod.prefixlen) < len(nodes):
            c.add(
                f"cluster {cname} label podlab.pod-cidr",
                f"pod CIDR {pod} holds {2 ** (prefix - pod.prefixlen)} node subnets of "
                f"/{prefix} but the cluster has {len(nodes)} nodes",
                "use a larger pod CIDR or a longer podlab.node-prefix",
                at("podlab.pod-cidr"),
            )
        mode = _choice(settings, "podlab.mode", "vxlan", MODES, cname, c, at("podlab.mode"))
        hollow = _hollow(
            settings, cname, len(nodes), pod, prefix, mode, c, at("podlab.hollow-nodes")
        )
        enc = _choice(
            settings, "podlab.encryption", "none", ENCRYPTIONS, cname, c, at("podlab.encryption")
        )
        proxy = _choice(
            settings,
            "podlab.proxy-mode",
            "nftables",
            PROXY_MODES,
            cname,
            c,
            at("podlab.proxy-mode"),
        )
        cps = [n.name for n in nodes if roles[n.name] == "control-plane"]
        if len(cps) != 1:
            c.add(
                f"cluster {cname}",
                f"has {len(cps)} control-plane nodes "
                f"({', '.join(cps) or 'none'}); exactly one runs the cluster's etcd",
                "set podlab.role: control-plane on exactly one node of the cluster",
                nodes[0].line,
            )
        for n in nodes:
            if not any(n.name in (m[0] for m in s.members) for s in segments.values()):
                c.add(
                    f"node {n.shown}",
                    "has no underlay link",
                    "link it to a bridge or another node (eth1)",
                    n.line,
                )
        if pod is None or svc is None or not cps:
            continue
        clusters[cname] = ClusterPlan(
            cname,
            cid,
            pod,
            svc,
            mode,
            enc,
            proxy,
            tuple(n.name for n in nodes),
            cps[0],
            prefix,
            settings.get("podlab.mesh"),
            hollow,
        )
        lines[cname] = {key: at(key) for key in CLUSTER_LABELS}
    check_meshes(clusters, lines, c)
    return clusters


def _hollow(
    settings: dict[str, str],
    cname: str,
    real: int,
    pod: IPv4Network | None,
    prefix: int,
    mode: str,
    c: Collector,
    line: int | None,
) -> int:
    """``podlab.hollow-nodes``: a count that fits the pod CIDR beside the real nodes
    (the flannel way: the CIDR's first subnet is never leased), in a mode hollow
    nodes can publish peer data for."""
    if "podlab.hollow-nodes" not in settings:
        return 0
    where = f"cluster {cname} label podlab.hollow-nodes"
    n = _int(settings["podlab.hollow-nodes"], where, 0, MAX_HOLLOW, c, line)
    if n and mode not in HOLLOW_MODES:
        c.add(
            where,
            f"hollow nodes in mode {mode}",
            f"use podlab.mode {' or '.join(HOLLOW_MODES)}",
            line,
        )
    if n and pod is not None and pod.prefixlen <= prefix:
        have = 2 ** (prefix - pod.prefixlen) - 1 - real
        if n > have:
            c.add(
                where,
                f"{n} hollow nodes do not fit: pod CIDR {pod} leaves {max(have, 0)} /{prefix} "
                f"subnets beside the {real} real nodes",
                "ask for fewer hollow nodes, or a larger podlab.pod-cidr",
                line,
            )
    return n


def _agree(cname: str, nodes: list[NodeSpec], c: Collector) -> dict[str, str]:
    settings: dict[str, str] = {}
    origin: dict[str, str] = {}
    for n in nodes:
        for key in CLUSTER_LABELS:
            if key not in n.labels:
                continue
            if key in settings and settings[key] != n.labels[key]:
                c.add(
                    f"node {n.shown} label {key}",
                    f"{n.labels[key]!r} differs from {settings[key]!r} on {origin[key]} "
                    f"in the same cluster {cname}",
                    "set cluster-wide labels once, on the cluster's group",
                    n.label_line(key),
                )
                continue
            settings[key], origin[key] = n.labels[key], n.name
    return settings


def _choice(
    settings: dict[str, str],
    key: str,
    default: str,
    allowed: tuple[str, ...],
    cname: str,
    c: Collector,
    line: int | None,
) -> str:
    value = settings.get(key, default)
    if value not in allowed:
        near = difflib.get_close_matches(value, allowed, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        c.add(
            f"cluster {cname} label {key}",
            f"unknown value {value!r}",
            f"{hint}use one of {', '.join(allowed)}",
            line,
        )
        return default
    return value


def _int(value: str, where: str, lo: int, hi: int, c: Collector, line: int | None) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not lo <= number <= hi:
        c.add(
            where,
            f"{value!r} is not an integer from {lo} to {hi}",
            f"use an integer from {lo} to {hi}",
            line,
        )
        return lo
    return number


def _net(value: str, where: str, c: Collector, line: int | None) -> IPv4Network | None:
    try:
        return IPv4Network(value, strict=True)
    except ValueError:
        c.add(
            where,
            f"{value!r} is not an IPv4 prefix (host bits set?)",
            "write it like 10.244.0.0/16",
            line,
        )
        return None
