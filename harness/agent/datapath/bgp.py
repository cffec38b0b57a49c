"""Calico's ``bgp`` (no encapsulation): BIRD announces each node's pod subnet over iBGP.

The agent runs one BIRD 2 per node (``harness.agent.bird``; config, control socket
and pid file in ``run_dir``) and re-renders ``bird.conf`` on every peer change,
reloading (``birdc configure``) only when the text changed; established sessions
stay up. Sessions: full-mesh iBGP (AS ``bgp_as``, 64512 unless the cluster is in a
mesh) by default; when any node publishes
``backend.RouteReflector: true`` (agent.yaml ``route_reflector``, Ansible from the
node label ``podlab.route-reflector``), clients peer only with reflectors and
reflectors peer with everyone (``bird.plan_peers``). Peers on another segment get
``multihop`` sessions. In a native cluster mesh (agent.yaml ``mesh`` and
``bgp_routers``) the node also peers over eBGP with the lab routers on its
segment: it announces its pod subnet to them and learns the other clusters' pod
subnets from them (``bird.render``'s ``routers``; docs/mesh.md).

Kernel objects: none written by the agent for peers (``peer_objects`` is empty):
BIRD exports learned pod subnets into the main table as ``<peer subnet> via
<peer underlayIP> dev <underlay> proto bird`` (rtm_protocol 12), which the
reconciler (proto 77 only) never touches. With ``encryption: wireguard`` the
WireGuard layer owns the peer routes (``dev wg-…``), so BIRD keeps its sessions
but exports nothing to the kernel. BIRD keeps running when the agent stops (kernel
state stays, as with the other modes); stopping BIRD withdraws this node's routes
from its peers. Pods are ROUTED. MTU = underlay (no overhead). Options: none.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from typing import Any, ClassVar

from harness.agent import bird
from harness.agent.config import AgentConfig
from harness.agent.datapath.base import (
    BaseDatapath,
    Daemon,
    Owned,
    Peer,
    PeerObjects,
    PodInterface,
)

log = logging.getLogger("podlab.bgp")

KERNEL_EXPORT = "export where source = RTS_BGP;"


class Bgp(BaseDatapath):
    name: ClassVar[str] = "bgp"
    pod_interface: ClassVar[PodInterface] = PodInterface.ROUTED
    overhead: ClassVar[int] = 0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.bird = bird.Bird(self.cfg.run_dir, sock=self.cfg.bird_socket)
        self.subnet: ipaddress.IPv4Network | None = None
        self.export_to_kernel = self.cfg.encryption != "wireguard"

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        b = bird.Bird(cfg.run_dir, sock=cfg.bird_socket)
        return Owned(
            daemons=frozenset({Daemon(b.pidfile, "bird")}),
            route_protos=frozenset({bird.RTPROT_BIRD}),  # left behind only by a killed BIRD
            files=frozenset({b.conf, b.sock}),
        )

    def backend_data(self) -> dict[str, Any]:
        return {"RouteReflector": self.cfg.route_reflector}

    def render(self, peers: list[Peer]) -> str:
        """bird.conf for the current peer set (pure given the peers)."""
        assert self.subnet is not None
        nodes = {p.node: p.underlay_ip for p in peers}
        nodes[self.cfg.node] = self.cfg.underlay_address
        reflectors = [p.node for p in peers if p.backend.get("RouteReflector") is True]
        if self.cfg.route_reflector:
            reflectors.append(self.cfg.node)
        segment = {p.node: p.segment for p in peers}
        sessions = [
            dataclasses.replace(s, multihop=segment.get(s.node) != self.cfg.segment)
            for s in bird.plan_peers(self.cfg.node, nodes, reflectors)
        ]
        routers = (
            [bird.RouterPeer(r.name, r.address, r.asn) for r in self.cfg.bgp_routers]
            if self.cfg.mesh
            else []
        )
        text = bird.render(
            self.cfg.underlay_address,
            self.subnet,
            self.cfg.underlay_interface,
            sessions,
            asn=self.cfg.bgp_as,
            routers=routers,
            cluster_cidr=self.cfg.pod_cidr,
        )
        if not self.export_to_kernel:
            text = text.replace(KERNEL_EXPORT, "export none;  # WireGuard owns peer routes")
        return text

    def setup(self, subnet: ipaddress.IPv4Network) -> None:
        self.subnet = subnet
        if self.bird.pid() is not None and self.bird.sock.exists():
            # An agent restart: BIRD kept its sessions and routes. Rewriting the config
            # now (no peers known yet) would drop every session; the first reconcile
            # rewrites it from the full lease listing instead.
            log.info("bgp: adopting running BIRD pid %s (%s)", self.bird.pid(), self.bird.sock)
            return
        self.bird.write_config(self.render([]))
        self.bird.start()
        log.info("bgp: BIRD pid %s, socket %s", self.bird.pid(), self.bird.sock)

    def peer_objects(self, peer: Peer) -> PeerObjects:
        return PeerObjects()  # BIRD installs the routes

    def peers_changed(self, peers: list[Peer]) -> None:
        if self.subnet is None:
            return
        if self.bird.write_config(self.render(peers)):
            if self.bird.pid() is None:
                self.bird.start()
            else:
                self.bird.reload()
            log.info("bgp: %d peers, bird.conf rewritten", len(peers))
        elif self.bird.pid() is None:
            log.error("bgp: BIRD is not running; starting it again")
            self.bird.start()
