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

    def line(self, *path: str | int) -> int | None:
        """The YAML line of ``path``, or of its nearest parent that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None
