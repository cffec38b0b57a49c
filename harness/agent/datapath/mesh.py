"""The cluster mesh layered on any mode: pods of other clusters, reached by pod IP.

``layer(dp, cfg, ipr)`` wraps the node's datapath when agent.yaml sets ``mesh``
(never otherwise: single-cluster nodes run exactly the mode they always ran).
Peers of the node's own cluster go to the mode as before; peers of other
clusters (subnet leases the mesh syncer mirrored under ``mesh/<cluster>/``) are
served by how the mesh routes (docs/mesh.md):

- **tunnel** (every mode but bgp, no encryption): a dedicated VXLAN device
  ``vxlan.mesh`` (VNI 2, UDP 8473, learning off, local = underlay address, MAC
  derived from cluster/node, address ``<own subnet>.0/32``) and per remote node
  flannel's triple — onlink route ``<remote subnet> via <remote subnet>.0 dev
  vxlan.mesh``, permanent neighbour ``<remote subnet>.0 lladdr <its
  MeshVtepMAC>``, FDB entry ``<its MeshVtepMAC> dst <its underlay IP>``. The
  outer packet crosses the lab's routers like any underlay packet. Whatever the
  in-cluster mode (host-gw, udp, ipip, vxlan…), the cross-cluster path is the
  same, so modes may mix in one tunnel mesh. Pod MTU = min(mode's, underlay −
  50), so a DF ping at the pod MTU fits every path.
- **native** (bgp): nothing here; the node's BIRD peers over eBGP with the lab
  routers on its segment (agent.yaml ``bgp_routers``, ``datapath/bgp.py``),
  announces its pod subnet and learns the other clusters' pod subnets, which it
  exports to the kernel (``<remote subnet> via <router> proto bird``). Remote
  peers are kept out of the iBGP mesh. Pod MTU = the mode's (no overhead).
- **wireguard** (either routing): remote peers go to the WireGuard layer like
  local ones (keys learnt through the mesh): one encrypted path to every node of
  every cluster; no mesh VXLAN device.
"""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

from pyroute2 import IPRoute

from harness.agent.config import AgentConfig
from harness.agent.datapath.base import Datapath, Owned, Peer, PeerObjects, Tunnel
from harness.agent.datapath.vxlan import Vxlan

MESH_DEVICE = "vxlan.mesh"
MESH_VNI = 2
MESH_PORT = 8473
VXLAN_OVERHEAD = 50


class MeshTunnel(Vxlan):
    """The cross-cluster VXLAN device: flannel's mechanics, the mesh's numbers."""

    vni: ClassVar[int] = MESH_VNI
    port: ClassVar[int] = MESH_PORT
    device: ClassVar[str] = MESH_DEVICE
    mac_seed: ClassVar[str] = "mesh"

    def backend_data(self) -> dict[str, Any]:
        return {"MeshVtepMAC": self.mac, "MeshVNI": self.vni, "MeshPort": self.port}

    def peer_objects(self, peer: Peer) -> PeerObjects:
        mac = str(peer.backend.get("MeshVtepMAC", ""))
        if not mac:
            return PeerObjects()
        return super().peer_objects(
            Peer(
                peer.node,
                peer.subnet,
                peer.underlay_ip,
                peer.segment,
                {**peer.backend, "VtepMAC": mac},
                peer.cluster,
            )
        )


def uses_tunnel(cfg: AgentConfig) -> bool:
    """Whether a node configured by ``cfg`` carries mesh traffic on ``vxlan.mesh``."""
    return bool(cfg.mesh) and cfg.mode != "bgp" and cfg.encryption == "none"


class MeshLayer:
    """A ``Datapath`` that adds the other clusters of the mesh to the node's mode."""

    def __init__(self, inner: Datapath, cfg: AgentConfig, ipr: IPRoute) -> None:
        self.inner, self.cfg = inner, cfg
        self.name = inner.name
        self.pod_interface = inner.pod_interface
        self.routing = "native" if cfg.mode == "bgp" else "tunnel"
        self.encrypted = cfg.encryption != "none"
        self.tunnel = MeshTunnel(cfg, ipr) if uses_tunnel(cfg) else None

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        """What the mesh may create node-wide: its tunnel device (``uses_tunnel``)."""
        return MeshTunnel.owned(cfg)

    def _remote(self, p: Peer) -> bool:
        return bool(p.cluster) and p.cluster != self.cfg.cluster

    def mtu(self) -> int:
        if self.tunnel is None:
            return self.inner.mtu()
        return min(self.inner.mtu(), self.cfg.underlay_mtu - VXLAN_OVERHEAD)

    def backend_data(self) -> dict[str, Any]:
        extra = self.tunnel.backend_data() if self.tunnel is not None else {}
        return {**self.inner.backend_data(), **extra}

    def setup(self, subnet: ipaddress.IPv4Network) -> None:
        self.inner.setup(subnet)
        if self.tunnel is not None:
            self.tunnel.setup(subnet)

    def devices(self) -> list[str]:
        return self.inner.devices() + (self.tunnel.devices() if self.tunnel is not None else [])

    def refuse(self, peers: list[Peer]) -> tuple[list[Peer], list[str]]:
        if self.encrypted:  # WireGuard serves every node of every cluster the same way
            return self.inner.refuse(peers)
        local = [p for p in peers if not self._remote(p)]
        remote = [p for p in peers if self._remote(p)]
        accepted, problems = self.inner.refuse(local)
        if self.tunnel is None:  # native: BIRD learns their routes from the lab's routers
            if remote and not self.cfg.bgp_routers:
                problems = [
                    *problems,
                    "mesh: native routing but no lab router to peer with on this node's "
                    "segment (agent.yaml bgp_routers): no route to the other clusters' pods",
                ]
            return accepted + remote, problems
        keyless = [p for p in remote if not p.backend.get("MeshVtepMAC")]
        if keyless:
            named = ", ".join(f"{p.cluster}/{p.node}" for p in keyless)
            problems = [*problems, f"mesh: remote nodes {named} publish no MeshVtepMAC; no route"]
        return accepted + [p for p in remote if p not in keyless], problems

    def peer_objects(self, peer: Peer) -> PeerObjects:
        if self.encrypted or not self._remote(peer):
            return self.inner.peer_objects(peer)
        if self.tunnel is None:
            return PeerObjects()
        return self.tunnel.peer_objects(peer)

    def peers_changed(self, peers: list[Peer]) -> None:
        self.inner.peers_changed(
            peers if self.encrypted else [p for p in peers if not self._remote(p)]
        )

    def tunnels(self) -> list[Tunnel]:
        mesh = self.tunnel.tunnels() if self.tunnel is not None else []
        return self.inner.tunnels() + mesh  # vxlan.mesh: UDP 8473

    def close(self) -> None:
        self.inner.close()


def layer(dp: Datapath, cfg: AgentConfig, ipr: IPRoute) -> Datapath:
    """``dp`` with the mesh on top when the node's cluster is in a mesh."""
    if cfg.mesh:
        return MeshLayer(dp, cfg, ipr)  # type: ignore[return-value]
    return dp
