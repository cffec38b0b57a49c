"""Read a containerlab topology file into a Topology, collecting every problem.

Only structure and containerlab semantics live here (names, kinds, links,
inheritance); podlab's own meaning of labels is checked by the plan stage.
"""

from __future__ import annotations

import hashlib
import re
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from harness.errors import Collector
from harness.topology import clab
from harness.topology.model import Endpoint, LinkSpec, NodeSpec, Topology
from harness.topology.yamlpos import YamlProblem, load_with_lines

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
IFACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
SUPPORTED_KINDS = ("linux", "bridge")
INHERITED = ("kind", "labels")


def load_topology(path: str | Path, c: Collector | None = None) -> Topology:
    """Load and structurally check ``path``; raise UserError listing every problem.

    With a collector given, problems in links and nodes that can be skipped are
    left in it (not raised) so the plan stage can report its own in the same run.
    """
    path = Path(path)
    keep = c is not None
    c = c or Collector(str(path))
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        c.add("file", f"cannot read: {exc.__class__.__name__}: {exc}", "give a readable UTF-8 file")
        c.raise_if_any()
        raise AssertionError("unreachable") from None
    topo = parse_topology(text, str(path), c, keep=True)
    if not keep:
        c.raise_if_any()
    return topo


def parse_topology(
    text: str, filename: str, c: Collector | None = None, keep: bool = False
) -> Topology:
    """Parse topology ``text``; ``filename`` is only used in messages."""
    c = c or Collector(filename)
    try:
        data, lines, dups = load_with_lines(text)
    except YamlProblem as exc:
        c.add("file", str(exc), "fix the YAML syntax at that line", exc.line)
        c.raise_if_any()
        raise AssertionError("unreachable") from None
    for dpath, line in dups:
        c.add(_dotted(dpath), "key given twice", "keep one of them", line)
    if not isinstance(data, dict):
        c.add(
            "file",
            "top level must be a mapping with name: and topology:",
            "start from topologies/single-cluster.clab.yml",
            lines.get(()),
        )
        c.raise_if_any()
    clab.check(data, c, lines)  # what containerlab's schema refuses, refused here too
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        c.add(
            "name",
            f"lab name {name!r} is missing or invalid",
            "use 1-32 lowercase letters, digits and dashes",
            lines.get(("name",)),
        )
        name = "invalid"
    mgmt_subnet = _mgmt(data.get("mgmt"), c, lines)
    topo = data.get("topology")
    if not isinstance(topo, dict):
        c.add(
            "topology",
            "missing or not a mapping",
            "add a topology: section with nodes:",
            lines.get(("topology",)),
        )
        c.raise_if_any()
        raise AssertionError("unreachable")
    nodes = _nodes(topo, c, lines)
    raw_nodes = (topo.get("nodes") or {}) if isinstance(topo.get("nodes"), dict) else {}
    links = _links(topo.get("links"), nodes, c, lines, set(raw_nodes))
    if not keep:
        c.raise_if_any()
    digest = hashlib.sha256(text.encode()).hexdigest()
    return Topology(name, filename, digest, mgmt_subnet, nodes, tuple(links), lines)


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "file"


def _mgmt(mgmt: Any, c: Collector, lines: dict) -> IPv4Network | None:
    if mgmt is None:
        return None
    subnet = mgmt.get("ipv4-subnet") if isinstance(mgmt, dict) else None
    if subnet is None or subnet == "auto":
        return None
    try:
        net = IPv4Network(str(subnet), strict=True)
    except ValueError:
        c.add(
            "mgmt.ipv4-subnet",
            f"{subnet!r} is not an IPv4 prefix (host bits set?)",
            "write it like 172.20.20.0/24",
            lines.get(("mgmt", "ipv4-subnet")),
        )
        return None
    if net.prefixlen > 29:
        c.add(
            "mgmt.ipv4-subnet",
            f"{net} is too small",
            "use a /24 or larger",
            lines.get(("mgmt", "ipv4-subnet")),
        )
    return net


def _section(topo: dict, key: str, c: Collector, lines: dict) -> dict:
    value = topo.get(key) or {}
    if not isinstance(value, dict):
        c.add(
            f"topology.{key}",
            "must be a mapping",
            f"write {key}: as name: settings",
            lines.get(("topology", key)),
        )
        return {}
    return {k: (v or {}) for k, v in value.items()}


def _labels(value: Any, where: str, c: Collector, line: int | None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.add(where, "labels must be a mapping", "write labels: {key: value}", line)
        return {}
    return {
        str(k): ("true" if v is True else "false" if v is False else str(v))
        for k, v in value.items()
    }


def _nodes(topo: dict, c: Collector, lines: dict) -> dict[str, NodeSpec]:
    defaults = topo.get("defaults") or {}
    kinds = _section(topo, "kinds", c, lines)
    groups = _section(topo, "groups", c, lines)
    raw = topo.get("nodes")
    if not isinstance(raw, dict) or not raw:
        c.add(
            "topology.nodes",
            "no nodes",
            "add nodes under topology.nodes",
            lines.get(("topology", "nodes")) or lines.get(("topology",)),
        )
        return {}
    out: dict[str, NodeSpec] = {}
    for index, (name, spec) in enumerate(raw.items()):
        where = f"node {name}"
        line = lines.get(("topology", "nodes", name))
        spec = spec or {}
        if not isinstance(spec, dict):
            c.add(where, "node settings must be a mapping", "write name: {kind: linux}", line)
            continue
        if not isinstance(name, str) or not NAME_RE.match(name):
            c.add(
                where,
                "invalid node name",
                "use 1-32 lowercase letters, digits and dashes (it becomes a hostname)",
                line,
            )
            continue
        group_name = spec.get("group")
        group = groups.get(group_name, {}) if group_name else {}
        if group_name and group_name not in groups:
            c.add(
                where,
                f"group {group_name!r} is not defined",
                "add it under topology.groups or fix the name",
                lines.get(("topology", "nodes", name, "group")),
            )
        kind = spec.get("kind") or group.get("kind") or defaults.get("kind") or "linux"
        if kind not in SUPPORTED_KINDS:
            c.add(
                where,
                f"kind {kind!r} is not supported by podlab (a node is a namespace or a VM)",
                "use kind: linux for lab nodes (netns or VM) or kind: bridge for L2 segments",
                line,
            )
            continue
        labels: dict[str, str] = {}
        label_lines: dict[str, int | None] = {}
        for layer, lwhere, lpath in (
            (defaults, "topology.defaults.labels", ("topology", "defaults", "labels")),
            (
                kinds.get(kind, {}),
                f"topology.kinds.{kind}.labels",
                ("topology", "kinds", kind, "labels"),
            ),
            (
                group,
                f"topology.groups.{group_name}.labels",
                ("topology", "groups", group_name, "labels"),
            ),
            (spec, f"{where} labels", ("topology", "nodes", name, "labels")),
        ):
            layer_labels = _labels(layer.get("labels"), lwhere, c, lines.get(lpath))
            labels.update(layer_labels)
            label_lines.update({k: lines.get((*lpath, k)) for k in layer_labels})
        mgmt = spec.get("mgmt-ipv4")
        out[name] = NodeSpec(
            name, kind, labels, str(mgmt) if mgmt else None, line, index, label_lines
        )
    return out


def _links(
    raw: Any, nodes: dict[str, NodeSpec], c: Collector, lines: dict, declared: set[str]
) -> list[LinkSpec]:
    """Links between known nodes; a node refused for its own reason (its kind, say)
    is not reported again as unknown on every link it has."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        c.add(
            "topology.links",
            "must be a list",
            "write links: as a list of {endpoints: [...]}",
            lines.get(("topology", "links")),
        )
        return []
    out: list[LinkSpec] = []
    used: dict[tuple[str, str], int] = {}
    for i, link in enumerate(raw):
        where = f"topology.links[{i}]"
        line = lines.get(("topology", "links", i))
        if not isinstance(link, dict):
            c.add(where, "a link must be a mapping", "write {endpoints: [a:eth1, b:eth1]}", line)
            continue
        eps = _endpoints(link, where, c, line)
        if eps is None:
            continue
        ok = True
        for ep in eps:
            if ep.node not in nodes and ep.node in declared:
                ok = False
                continue
            if ep.node not in nodes:
                c.add(
                    where,
                    f"endpoint {ep.node}:{ep.interface} names unknown node {ep.node!r}",
                    "declare the node under topology.nodes or fix the name",
                    line,
                )
                ok = False
                continue
            if not IFACE_RE.match(ep.interface) or (
                nodes[ep.node].kind == "linux" and ep.interface in ("eth0", "lo")
            ):
                c.add(
                    where,
                    f"interface name {ep.interface!r} on {ep.node} is not usable",
                    "use eth1, eth2 … (eth0 is management; at most 15 characters)",
                    line,
                )
                ok = False
                continue
            key = (ep.node, ep.interface)
            if key in used:
                c.add(
                    where,
                    f"interface {ep.node}:{ep.interface} is already used by "
                    f"topology.links[{used[key]}]",
                    "give each link its own interface",
                    line,
                )
                ok = False
            used[key] = i
        if ok and eps[0].node == eps[1].node:
            c.add(where, f"link connects {eps[0].node} to itself", "connect two nodes", line)
            ok = False
        mtu = link.get("mtu")
        if mtu is not None and (not isinstance(mtu, int) or not 1280 <= mtu <= 65535):
            c.add(where, f"mtu {mtu!r} out of range", "use an integer from 1280 to 65535", line)
            ok = False
        if ok:
            out.append(LinkSpec(i, (eps[0], eps[1]), mtu, line))
    return out


def _endpoints(link: dict, where: str, c: Collector, line: int | None) -> list[Endpoint] | None:
    raw = link.get("endpoints")
    if not isinstance(raw, list) or len(raw) != 2:
        c.add(
            where, "a link needs exactly two endpoints", "write endpoints: [a:eth1, b:eth1]", line
        )
        return None
    addrs = link.get("ipv4") or []
    if not isinstance(addrs, list):
        c.add(where, "ipv4 must be a list", "write ipv4: [10.0.0.1/30, 10.0.0.2/30]", line)
        addrs = []
    out = []
    for j, ep in enumerate(raw):
        if isinstance(ep, str) and ep.count(":") == 1 and all(ep.split(":")):
            node, iface = ep.split(":")
            addr = addrs[j] if j < len(addrs) else None
        elif isinstance(ep, dict) and "node" in ep and "interface" in ep:
            node, iface, addr = str(ep["node"]), str(ep["interface"]), ep.get("ipv4")
        else:
            c.add(where, f"endpoint {ep!r} is not node:interface", "write it like c1-w1:eth1", line)
            return None
        ip = None
        if addr not in (None, ""):
            try:
                ip = IPv4Interface(str(addr))
                if "/" not in str(addr):
                    raise ValueError
            except ValueError:
                c.add(
                    where,
                    f"address {addr!r} for {node}:{iface} is not an IPv4 address/prefix",
                    "write it like 10.0.0.1/24",
                    line,
                )
                return None
        out.append(Endpoint(node, iface, ip))
    return out
