"""The datapath seam: what one pod-network mode must say, and nothing more.

As in flannel's ``pkg/backend``, a mode only says which kernel objects one remote
peer needs (``peer_objects``), which devices it owns (``setup``) and what it
publishes about itself in its subnet lease (``backend_data``). It also declares
what it creates node-wide (``owned``: devices, helper daemons, their routes and
files), so that when the node switches to another mode the agent removes exactly
what the old mode made and the new one does not (``harness.agent.retire``). The shared
reconciler (``harness.agent.reconcile``) diffs those desired objects against the
kernel, applies them with ``replace``, removes stale ones and re-adds what someone
deleted. How pods attach to the node (``pod_interface``) is a property of the
mode's family: Flannel modes bridge pods into ``cni0``; Calico modes give
each pod a routed ``cali*`` veth with a /32 and proxy-ARP.

How to add a mode: write ``datapath/<mode>.py`` with a class satisfying
``Datapath`` (its ``owned`` naming every node-wide object it creates), add it to
``DATAPATHS`` in ``registry.py``, document its options, kernel objects and MTU
overhead in docs/datapaths.md, add a kernel test under tests/agent/, and add it
to the switch chain of tests/agent/test_mode_switch.py.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pyroute2 import IPRoute

from harness.agent.config import AgentConfig

#: rtm_protocol stamped on every route the agent owns, so stale ones can be found
#: without touching anyone else's (``ip route show proto 77``).
RTPROT_PODLAB = 77


class PodInterface(enum.Enum):
    """How a pod's veth meets the node: decided by the mode family, not by a flag."""

    BRIDGED = "bridged"  # Flannel family: veth into bridge cni0, gateway .1 on cni0
    ROUTED = "routed"  # Calico family: cali* veth, /32 route, proxy-ARP


@dataclass(frozen=True)
class Peer:
    """A remote node as its subnet lease describes it."""

    node: str
    subnet: ipaddress.IPv4Network
    underlay_ip: ipaddress.IPv4Address
    segment: str
    backend: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    cluster: str = ""  # set for nodes of other clusters of the mesh (datapath/mesh.py)

    @staticmethod
    def from_record(rec: dict[str, Any], cluster: str = "") -> Peer:
        return Peer(
            node=str(rec["node"]),
            subnet=ipaddress.IPv4Network(rec["subnet"]),
            underlay_ip=ipaddress.IPv4Address(rec["underlayIP"]),
            segment=str(rec.get("segment", "")),
            backend=dict(rec.get("backend") or {}),
            cluster=cluster,
        )


@dataclass(frozen=True)
class RouteSpec:
    """A main-table route: ``dst via <via> dev <dev> [onlink] proto 77``."""

    dst: ipaddress.IPv4Network
    via: ipaddress.IPv4Address | None = None
    dev: str | None = None
    onlink: bool = False


@dataclass(frozen=True)
class NeighSpec:
    """A permanent ARP entry: ``ip`` is at ``mac`` on ``dev``."""

    dev: str
    ip: ipaddress.IPv4Address
    mac: str


@dataclass(frozen=True)
class FdbSpec:
    """A VXLAN forwarding entry: frames for ``mac`` go to underlay ``dst``."""

    dev: str
    mac: str
    dst: ipaddress.IPv4Address


@dataclass(frozen=True)
class Tunnel:
    """Outer packets a mode exchanges between nodes: UDP to ``port``, or IPIP (protocol 4).

    The node's ruleset exempts them from conntrack (``nft.masquerade_ruleset``):
    they are never NATed or policed, and tracking them costs every tunnelled
    packet a second conntrack lookup on each node.
    """

    proto: str  # "udp" | "ipip"
    port: int = 0


@dataclass(frozen=True)
class Daemon:
    """A helper process a mode keeps running beside the agent (BIRD, wireguard-go).

    Found by its pid file and stopped only if the pid still names a process called
    ``comm`` in this node's network namespace: a stale pid file never kills a
    stranger that reused the pid.
    """

    pidfile: Path
    comm: str


@dataclass(frozen=True)
class Owned:
    """What one part of the datapath creates node-wide (declared, never discovered).

    Modes, the encryption layer and the pod interface styles each name theirs;
    at start the agent removes what the parts it does not run declare and the
    parts it runs do not (``harness.agent.retire``). Per-peer routes, neighbours
    and FDB entries are not listed: they live on these devices, or are stamped
    proto 77 and belong to the reconciler.
    """

    links: frozenset[str] = frozenset()  # device names
    daemons: frozenset[Daemon] = frozenset()
    route_protos: frozenset[int] = frozenset()  # main-table routes a daemon installs
    files: frozenset[Path] = frozenset()  # configs, sockets, logs of those daemons

    def __or__(self, other: Owned) -> Owned:
        return Owned(
            self.links | other.links,
            self.daemons | other.daemons,
            self.route_protos | other.route_protos,
            self.files | other.files,
        )

    def __sub__(self, other: Owned) -> Owned:
        return Owned(
            self.links - other.links,
            self.daemons - other.daemons,
            self.route_protos - other.route_protos,
            self.files - other.files,
        )

    def __bool__(self) -> bool:
        return bool(self.links or self.daemons or self.route_protos or self.files)


NOTHING = Owned()


@dataclass
class PeerObjects:
    """Everything one peer needs in this node's kernel."""

    routes: list[RouteSpec] = field(default_factory=list)
    neighs: list[NeighSpec] = field(default_factory=list)
    fdbs: list[FdbSpec] = field(default_factory=list)


class Datapath(Protocol):
    """One pod-network mode. Constructed as ``Mode(cfg, ipr)``."""

    name: ClassVar[str]
    pod_interface: ClassVar[PodInterface]

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        """Every node-wide object this mode may create on a node configured by ``cfg``
        (whatever implementation it picks there: kernel or userspace)."""
        ...

    def mtu(self) -> int:
        """The pod MTU: underlay MTU minus this mode's encapsulation overhead."""
        ...

    def backend_data(self) -> dict[str, Any]:
        """What peers need to know about us (e.g. the VTEP MAC); goes into the lease."""
        ...

    def setup(self, subnet: ipaddress.IPv4Network) -> None:
        """Ensure this mode's devices exist and are right (ensure-or-recreate, logged)."""
        ...

    def devices(self) -> list[str]:
        """Devices whose permanent neighbours and FDB entries the reconciler owns."""
        ...

    def refuse(self, peers: list[Peer]) -> tuple[list[Peer], list[str]]:
        """Split peers into those this mode can serve and human-readable problems."""
        ...

    def peer_objects(self, peer: Peer) -> PeerObjects:
        """Desired kernel objects for one accepted peer."""
        ...

    def peers_changed(self, peers: list[Peer]) -> None:
        """Hook for modes with userspace state (udp's peer table); usually a no-op."""
        ...

    def tunnels(self) -> list[Tunnel]:
        """The outer packets this mode sends between nodes (none for plain routing)."""
        ...

    def close(self) -> None:
        """Stop userspace helpers WITHOUT removing kernel state (pods keep working)."""
        ...


class BaseDatapath:
    """Defaults shared by the modes; a mode overrides only what differs."""

    name: ClassVar[str] = ""
    pod_interface: ClassVar[PodInterface] = PodInterface.BRIDGED
    overhead: ClassVar[int] = 0

    def __init__(self, cfg: AgentConfig, ipr: IPRoute) -> None:
        self.cfg = cfg
        self.ipr = ipr

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        return NOTHING

    def mtu(self) -> int:
        return self.cfg.underlay_mtu - self.overhead

    def backend_data(self) -> dict[str, Any]:
        return {}

    def setup(self, subnet: ipaddress.IPv4Network) -> None:
        return None

    def devices(self) -> list[str]:
        return []

    def refuse(self, peers: list[Peer]) -> tuple[list[Peer], list[str]]:
        return peers, []

    def peers_changed(self, peers: list[Peer]) -> None:
        return None

    def tunnels(self) -> list[Tunnel]:
        return []

    def close(self) -> None:
        return None
