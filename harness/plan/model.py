"""Frozen data of a lab plan: what every later stage reads and nothing writes.

The plan is pure data derived from a topology file. Backends build it, the
inventory exports it, the report never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

# Datapath modes the agent implements. Flannel-style first, then Calico-style.
FLANNEL_MODES = ("host-gw", "vxlan", "udp")
CALICO_MODES = ("bgp", "ipip", "calico-vxlan", "cross-subnet")
MODES = FLANNEL_MODES + CALICO_MODES
ENCRYPTIONS = ("none", "wireguard")
PROXY_MODES = ("nftables", "iptables", "userspace", "ipvs")  # ipvs: kernel IPVS (VM labs)
ROLES = ("control-plane", "worker", "router", "host")

DEFAULT_MTU = 1500
DEFAULT_NODE_PREFIX = 24


@dataclass(frozen=True)
class Interface:
    """An underlay interface of a node (``eth1`` …), on one L2 segment."""

    name: str
    segment: str
    address: IPv4Interface | None  # None: a plain containerlab link without ipv4:
    mtu: int


@dataclass(frozen=True)
class Route:
    """A static underlay route a node needs to reach a segment it is not on."""

    dest: IPv4Network
    via: IPv4Address
    dev: str


@dataclass(frozen=True)
class NodePlan:
    """One lab node: its role, cluster, management address, links and routes."""

    name: str
    role: str
    cluster: str | None
    mgmt: IPv4Interface
    interfaces: tuple[Interface, ...]
    routes: tuple[Route, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    route_reflector: bool = False
    clab_name: str | None = None  # the file's name (PC1) when ``name`` is derived (pc1)
    exec: tuple[str, ...] = ()  # containerlab's exec: commands, run in order after up
    env: tuple[tuple[str, str], ...] = ()  # containerlab's env: for those commands
    exec_lines: tuple[int | None, ...] = ()  # each command's line (for a failing one)
    binds: tuple[tuple[str, str, bool], ...] = ()  # containerlab's binds: (host, node, ro)
    # seconds after the nodes are up before this node's exec: starts: its startup-delay,
    # or the longer one of a node it waits for (docs/containerlab.md)
    exec_delay: int = 0
    startup_delay: int = 0  # its own startup-delay as the file sets it (for export clab)
    # containerlab's stages wait-for as the file writes them: (stage, node, its stage),
    # kept for export clab (the exec order above is what podlab makes of them)
    waits: tuple[tuple[str, str, str | None], ...] = ()

    @property
    def shown(self) -> str:
        """``pc1 (PC1)`` for a derived name, else the name: what tables print."""
        return f"{self.name} ({self.clab_name})" if self.clab_name else self.name

    @property
    def underlay(self) -> Interface | None:
        """The interface the datapath uses: the node's first underlay link."""
        return self.interfaces[0] if self.interfaces else None

    @property
    def is_router(self) -> bool:
        return self.role == "router"

    def label(self, key: str, default: str = "") -> str:
        return dict(self.labels).get(key, default)


@dataclass(frozen=True)
class Segment:
    """An L2 domain: a ``kind: bridge`` node, or a point-to-point link."""

    name: str
    kind: str  # "bridge" | "p2p"
    subnet: IPv4Network | None  # None: a plain containerlab segment nobody addressed
    mtu: int
    members: tuple[tuple[str, str], ...]  # (node, interface)


@dataclass(frozen=True)
class ClusterPlan:
    """A cluster's settings, from its nodes' ``podlab.*`` labels."""

    name: str
    id: int
    pod_cidr: IPv4Network
    service_cidr: IPv4Network
    mode: str
    encryption: str
    proxy_mode: str
    nodes: tuple[str, ...]
    control_plane: str
    node_prefix: int = DEFAULT_NODE_PREFIX
    mesh: str | None = None  # podlab.mesh: the cluster mesh it joins (docs/mesh.md)
    hollow_nodes: int = 0  # podlab.hollow-nodes (docs/hollow.md)

    @property
    def mesh_routing(self) -> str:
        """How pods of other clusters of the mesh are reached: ``native`` (bgp, routes
        through the lab's routers) or ``tunnel`` (VXLAN to the remote node)."""
        return "native" if self.mode == "bgp" else "tunnel"


@dataclass(frozen=True)
class LabPlan:
    """Everything needed to build, inventory and test one lab."""

    name: str
    source: str
    digest: str
    mgmt_subnet: IPv4Network
    mgmt_gateway: IPv4Interface
    nodes: dict[str, NodePlan]
    segments: dict[str, Segment]
    clusters: dict[str, ClusterPlan]
    bridges: tuple[str, ...] = field(default=())
    regime: str = "podlab"  # "containerlab": a plain file (no podlab.* label), no address plan
    clab_name: str | None = None  # the file's lab name (K8s_Lab) when ``name`` is derived
    exec_order: tuple[str, ...] = ()  # nodes in the order their exec: runs (wait-for)

    def cluster_nodes(self, cluster: str) -> list[NodePlan]:
        return [n for n in self.nodes.values() if n.cluster == cluster]

    def node_segments(self, node: str) -> list[str]:
        return [i.segment for i in self.nodes[node].interfaces]
