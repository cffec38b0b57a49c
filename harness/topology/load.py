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
# containerlab's node-name pattern (schema topology.nodes patternProperties)
CLAB_NODE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-._|]*$")
CLAB_LAB_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-._]*$")  # schema: name
IFACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
SUPPORTED_KINDS = ("linux", "bridge")
INHERITED = ("kind", "labels")
# where containerlab's binds: may mount into a netns node: its private directories
# (harness.lab.nodeinit.PRIVATE_DIRS) and its private /run; anywhere else the
# mountpoint would be the host's own path (tests/unit/test_topology_clab_style.py)
BIND_TARGETS = (
    "/etc/podlab", "/var/lib/podlab", "/var/log/podlab", "/opt/podlab", "/opt/cni",
    "/etc/cni", "/var/lib/cni", "/etc/containers", "/var/lib/containers", "/run",
)  # fmt: skip
Layers = tuple[tuple[Any, tuple[Any, ...]], ...]  # (node-config, its YAML path), node first


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
    clab_name = None
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)  # containerlab's name: 01 is a YAML number, still a name
    if not isinstance(name, str) or not CLAB_LAB_RE.match(name):
        c.add(
            "name",
            f"lab name {name!r} is missing or invalid",
            "start with a letter or digit, then letters, digits, - . _ (containerlab's lab names)",
            lines.get(("name",)),
        )
        name = "invalid"
    elif not NAME_RE.match(name):  # containerlab's name: podlab's is derived, as for nodes
        clab_name, name = name, derived_name(name)
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
    nodes = _nodes(topo, c, lines, Path(filename).resolve().parent)
    raw_nodes = (topo.get("nodes") or {}) if isinstance(topo.get("nodes"), dict) else {}
    alias = {n.clab_name: n.name for n in nodes.values() if n.clab_name}
    links = _links(topo.get("links"), nodes, c, lines, set(raw_nodes), alias)
    if not keep:
        c.raise_if_any()
    digest = hashlib.sha256(text.encode()).hexdigest()
    raw_mgmt = data.get("mgmt")
    gw = raw_mgmt.get("ipv4-gw") if isinstance(raw_mgmt, dict) else None
    pool = raw_mgmt.get("ipv4-range") if isinstance(raw_mgmt, dict) else None
    return Topology(
        name,
        filename,
        digest,
        mgmt_subnet,
        nodes,
        tuple(links),
        lines,
        clab_name,
        str(gw) if gw not in (None, "") else None,
        str(pool) if pool not in (None, "") else None,
    )


def derived_name(name: str) -> str:
    """podlab's name for containerlab node ``name``: a valid hostname (``NAME_RE``).

    Names podlab already accepts stay as they are. Otherwise: lowercase, every
    ``.``, ``_`` and ``|`` becomes ``-``, dashes at the ends go; a result longer
    than 32 characters (or empty) is cut to 25 and given ``-`` and 6 hex digits of
    the name's sha256, so it stays deterministic and distinct. The hostname, the
    namespace ``podlab-<lab>-<name>``, the cgroup and the lab directory use it.
    """
    if NAME_RE.match(name):
        return name
    slug = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
    if not NAME_RE.match(slug):
        tag = hashlib.sha256(name.encode()).hexdigest()[:6]
        slug = f"{slug[:25].strip('-')}-{tag}".strip("-")
    return slug


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


def _nodes(topo: dict, c: Collector, lines: dict, base: Path) -> dict[str, NodeSpec]:
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
    taken: dict[str, str] = {}  # derived name -> the containerlab name that has it
    for index, (name, spec) in enumerate(raw.items()):
        where = f"node {name}"
        line = lines.get(("topology", "nodes", name))
        spec = spec or {}
        if not isinstance(spec, dict):
            c.add(where, "node settings must be a mapping", "write name: {kind: linux}", line)
            continue
        if not isinstance(name, str) or not CLAB_NODE_RE.match(name):
            c.add(
                where,
                "invalid node name",
                "start with a letter or digit, then letters, digits, - . _ | "
                "(containerlab's node names)",
                line,
            )
            continue
        clab_name = name
        name = derived_name(clab_name)
        if name in taken:
            c.add(
                where,
                f"node {taken[name]} and node {clab_name} both become hostname {name!r}",
                f"rename {taken[name]} or {clab_name} (hostnames, namespaces and interface "
                "names take lowercase letters, digits and -: both map to the same name)",
                line,
            )
            continue
        taken[name] = clab_name
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
        kind_line = lines.get(("topology", "nodes", clab_name, "kind")) or line
        if kind == "host":
            c.add(
                where,
                "kind 'host' is containerlab's host itself: podlab never runs a lab's "
                "commands or links in the host's own namespaces (lab traffic stays in "
                "the namespaces and VMs the lab creates)",
                "make it a kind: linux node; what exec: would do on the host, do there",
                kind_line,
            )
            continue
        if kind not in SUPPORTED_KINDS:
            c.add(
                where,
                f"kind {kind!r} is not run by podlab: it runs kind: linux (a namespace or "
                "a VM) and kind: bridge (an L2 segment)",
                "use kind: linux (a router: install its software, e.g. FRR, and start it "
                "in exec:) or kind: bridge",
                kind_line,
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
        layers: Layers = (
            (spec, ("topology", "nodes", clab_name)),
            (group, ("topology", "groups", group_name)),
            (kinds.get(kind, {}), ("topology", "kinds", kind)),
            (defaults, ("topology", "defaults")),
        )
        _hostname(layers, where, (clab_name, name), c, lines)
        commands, exec_lines = _exec(layers, where, c, lines)
        env = _env(layers, where, c, lines)
        binds = _binds(layers, where, c, lines, base)
        waits = _stages(layers, where, c, lines)
        wait_for = tuple(dict.fromkeys(node for _, node, _ in waits))
        delay = _startup_delay(layers, where, c, lines)
        mgmt = spec.get("mgmt-ipv4")
        out[name] = NodeSpec(
            name,
            kind,
            labels,
            str(mgmt) if mgmt else None,
            line,
            index,
            label_lines,
            clab_name if clab_name != name else None,
            commands,
            env,
            exec_lines,
            binds,
            wait_for,
            delay,
            waits,
        )
    return out


def _first(layers: Layers, key: str) -> tuple[Any, tuple[Any, ...]] | None:
    """The value of ``key`` in the first layer that sets it (containerlab's inheritance:
    node, group, kind, defaults), with that layer's YAML path; None when none does."""
    for layer, path in layers:
        if isinstance(layer, dict) and key in layer:
            return layer[key], path
    return None


def _hostname(
    layers: Layers, where: str, names: tuple[str, str], c: Collector, lines: dict
) -> None:
    """containerlab's ``hostname:`` is honoured when it is the node's own name (the
    file's or podlab's derived one): that is the hostname podlab gives the node."""
    found = _first(layers, "hostname")
    if found is None or found[0] is None or str(found[0]) in names:
        return
    c.add(
        where,
        f"hostname {found[0]!r} is not supported by podlab: a node's hostname is its "
        f"name ({names[1]})",
        "remove hostname:, or rename the node (see docs/containerlab.md)",
        lines.get((*found[1], "hostname")),
    )


def _startup_delay(layers: Layers, where: str, c: Collector, lines: dict) -> int:
    """containerlab's ``startup-delay`` (seconds, inherited like other settings): the
    node's ``exec:`` starts no sooner than that after the lab's nodes are up."""
    found = _first(layers, "startup-delay")
    if found is None or found[0] is None:
        return 0
    value = found[0]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3600:
        c.add(
            f"{where} startup-delay",
            f"{value!r} is not a number of seconds",
            "write startup-delay: 5 (an integer from 0 to 3600)",
            lines.get((*found[1], "startup-delay")),
        )
        return 0
    return value


def _exec(
    layers: Layers, where: str, c: Collector, lines: dict
) -> tuple[tuple[str, ...], tuple[int | None, ...]]:
    """containerlab's ``exec:``: the first layer (node, group, kind, defaults) that sets
    it wins, as containerlab's inheritance does; a list of shell command strings."""
    for layer, path in layers:
        if not isinstance(layer, dict) or "exec" not in layer:
            continue
        value, line = layer["exec"], lines.get((*path, "exec"))
        if value is None:
            return (), ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            c.add(
                f"{where} exec",
                "exec must be a list of commands",
                "write exec: [ip addr add 192.168.1.1/24 dev eth1, …]",
                line,
            )
            return (), ()
        return tuple(value), tuple(lines.get((*path, "exec", i), line) for i in range(len(value)))
    return (), ()


def _binds(
    layers: Layers, where: str, c: Collector, lines: dict, base: Path
) -> tuple[tuple[str, str, bool], ...]:
    """containerlab's ``binds:`` (``host:node[:ro|rw]``) of every layer, node's last.

    A relative host path is relative to the topology file and ``~`` is expanded, as
    containerlab does; the host path must exist; the node path must lie in one of
    the node's private directories (``BIND_TARGETS``).
    """
    out: dict[str, tuple[str, str, bool]] = {}
    for layer, path in reversed(layers):
        value = layer.get("binds") if isinstance(layer, dict) else None
        if value is None:
            continue
        line = lines.get((*path, "binds"))
        if not isinstance(value, list):
            c.add(f"{where} binds", "binds must be a list", "write binds: [src:dst]", line)
            continue
        for i, bind in enumerate(value):
            at = lines.get((*path, "binds", i), line)
            parts = str(bind).split(":")
            if (
                len(parts) not in (2, 3)
                or not all(parts[:2])
                or parts[2:] not in ([], ["ro"], ["rw"])
            ):
                c.add(
                    f"{where} binds",
                    f"{bind!r} is not host-path:node-path[:ro]",
                    "write it like ./configs/frr:/etc/podlab/frr:ro",
                    at,
                )
                continue
            src = Path(parts[0]).expanduser()
            src = src if src.is_absolute() else base / src
            dst = parts[1].rstrip("/") or "/"
            if not src.exists():
                c.add(
                    f"{where} binds",
                    f"host path {parts[0]} does not exist",
                    "create it, or fix the path (relative paths start at the topology file)",
                    at,
                )
                continue
            inside = [t for t in BIND_TARGETS if dst.startswith(t + "/")]
            if not dst.startswith("/") or not inside or ".." in dst.split("/"):
                c.add(
                    f"{where} binds",
                    f"node path {dst!r} is outside the node's private directories: there "
                    "it would be the host's own path",
                    f"mount below one of {', '.join(BIND_TARGETS)}",
                    at,
                )
                continue
            out[dst] = (str(src.resolve()), dst, parts[2:] == ["ro"])
    return tuple(out.values())


STAGES = ("create", "create-links", "configure", "healthy", "exit")


def _stages(
    layers: Layers, where: str, c: Collector, lines: dict
) -> tuple[tuple[str, str, str | None], ...]:
    """containerlab's ``stages``: (own stage, node, its stage) of every ``wait-for``.

    All nodes are created and linked together here, so waiting only orders
    ``exec:`` (a node runs its commands after those it waits for). A stage's own
    ``exec`` (on-enter/on-exit, host targets) is refused: it is not implemented.
    """
    for layer, path in layers:
        value = layer.get("stages") if isinstance(layer, dict) else None
        if value is None:
            continue
        line = lines.get((*path, "stages"))
        if not isinstance(value, dict):
            c.add(f"{where} stages", "stages must be a mapping", "write stages: {…}", line)
            return ()
        out: list[tuple[str, str, str | None]] = []
        for stage, conf in value.items():
            at = lines.get((*path, "stages", stage), line)
            if stage not in STAGES or not isinstance(conf, dict):
                c.add(f"{where} stages", f"unknown stage {stage!r}", f"use {', '.join(STAGES)}", at)
                continue
            if conf.get("exec") is not None:
                c.add(
                    f"{where} stages.{stage}",
                    "a stage's own exec is not supported by podlab",
                    "move the commands to the node's exec:, ordered by wait-for",
                    lines.get((*path, "stages", stage, "exec"), at),
                )
            for dep in conf.get("wait-for") or []:
                node = dep.get("node") if isinstance(dep, dict) else None
                if not isinstance(node, str):
                    c.add(
                        f"{where} stages.{stage}",
                        f"wait-for entry {dep!r} names no node",
                        "write wait-for: [{node: other, stage: healthy}]",
                        at,
                    )
                    continue
                theirs = dep.get("stage")
                out.append((str(stage), node, str(theirs) if theirs is not None else None))
        return tuple(out)
    return ()


def _env(layers: Layers, where: str, c: Collector, lines: dict) -> dict[str, str]:
    """containerlab's ``env:``, merged defaults → kind → group → node (node wins)."""
    env: dict[str, str] = {}
    for layer, path in reversed(layers):
        value = layer.get("env") if isinstance(layer, dict) else None
        if value is None:
            continue
        if not isinstance(value, dict) or not all(
            isinstance(v, str | int | float | bool) for v in value.values()
        ):
            c.add(
                f"{where} env",
                "env must map names to strings or numbers",
                "write env: {NAME: value}",
                lines.get((*path, "env")),
            )
            continue
        for k, v in value.items():
            env[str(k)] = "true" if v is True else "false" if v is False else str(v)
    return env


def _links(
    raw: Any,
    nodes: dict[str, NodeSpec],
    c: Collector,
    lines: dict,
    declared: set[str],
    alias: dict[str, str],
) -> list[LinkSpec]:
    """Links between known nodes; a node refused for its own reason (its kind, say)
    is not reported again as unknown on every link it has. Endpoints name nodes as
    the file does (``PC1``); the links carry podlab's derived names (``pc1``)."""
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
        kind = link.get("type", "veth")
        if kind != "veth":
            c.add(
                where,
                f"link type {kind!r} is not supported by podlab: it builds veth links "
                "between lab nodes (and bridge ports)",
                "use a veth link (endpoints: [a:eth1, b:eth1]) or a kind: bridge node",
                lines.get(("topology", "links", i, "type")) or line,
            )
            continue
        eps = _endpoints(link, where, c, line)
        if eps is None:
            continue
        eps = [Endpoint(alias.get(ep.node, ep.node), ep.interface, ep.ipv4) for ep in eps]
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
    if link.get("ipv6") or any(isinstance(ep, dict) and ep.get("ipv6") for ep in raw):
        c.add(
            where,
            "ipv6 addresses on links are not supported by podlab (its labs are IPv4)",
            "remove ipv6:, or add the addresses in the nodes' exec:",
            line,
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
