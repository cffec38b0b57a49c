"""The topology as the user wrote it, after containerlab's label inheritance.

Still close to the file (names, kinds, links, labels); the plan stage derives
clusters, segments and addresses from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network


@dataclass(frozen=True)
class NodeSpec:
    """A node with its effective kind and labels (defaults → kinds → groups → node)."""

    name: str
    kind: str
    labels: dict[str, str]
    mgmt_ipv4: str | None
    line: int | None
    index: int  # order of declaration, for stable address assignment
    label_lines: dict[str, int | None] | None = None  # where each effective label was set
    clab_name: str | None = None  # the file's name when podlab derived another (PC1 -> pc1)
    exec: tuple[str, ...] = ()  # containerlab's exec: run in order after the lab is up
    env: dict[str, str] | None = None  # containerlab's env: (exec commands get it)
    exec_lines: tuple[int | None, ...] = ()  # the YAML line of each exec command
    binds: tuple[tuple[str, str, bool], ...] = ()  # (host path, node path, read-only)
    wait_for: tuple[str, ...] = ()  # stages' wait-for: nodes (as the file names them)
    startup_delay: int = 0  # containerlab's startup-delay: exec starts no sooner (seconds)
    waits: tuple[tuple[str, str, str | None], ...] = ()  # (stage, node, its stage) of wait-for

    @property
    def shown(self) -> str:
        """The node's name as the file writes it (``PC1``), for messages."""
        return self.clab_name or self.name

    def label_line(self, key: str) -> int | None:
        """The YAML line that set label ``key`` (group or node), else the node's line."""
        return (self.label_lines or {}).get(key) or self.line


@dataclass(frozen=True)
class Endpoint:
    node: str
    interface: str
    ipv4: IPv4Interface | None


@dataclass(frozen=True)
class LinkSpec:
    index: int
    endpoints: tuple[Endpoint, Endpoint]
    mtu: int | None
    line: int | None


@dataclass(frozen=True)
class Topology:
    """A parsed, structurally valid containerlab topology."""

    name: str
    path: str
    digest: str
    mgmt_subnet: IPv4Network | None
    nodes: dict[str, NodeSpec]
    links: tuple[LinkSpec, ...]
    lines: dict[tuple[str | int, ...], int]
    clab_name: str | None = None  # the file's lab name when podlab derived another
    mgmt_gateway: str | None = None  # mgmt.ipv4-gw as written (the host's address)
    mgmt_range: str | None = None  # mgmt.ipv4-range as written (where nodes' addresses come from)

    @property
    def plain(self) -> bool:
        """True for a plain containerlab file: no node carries a ``podlab.*`` label.

        Such a lab is built as containerlab would build it (plain hosts, no
        data-plane address the file did not ask for); any ``podlab.*`` label puts the
        whole file in podlab's cluster regime (roles, clusters, the address plan).
        """
        return not any(k.startswith("podlab.") for n in self.nodes.values() for k in n.labels)

    @property
    def regime(self) -> str:
        """``containerlab`` (a plain file) or ``podlab`` (clusters, roles, address plan)."""
        return "containerlab" if self.plain else "podlab"

    def line(self, *path: str | int) -> int | None:
        """The YAML line of ``path``, or of its nearest parent that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None
