"""Calico's ``ipip``: pod packets inside an outer IPv4 header (protocol 4) between nodes.

Two implementations, chosen once at start-up and published in the lease and the
node record as ``backend.IPIPImpl`` (and logged), so a report can say which ran:

- ``kernel``: where the kernel has the ``ipip`` module (``ipip_tun.
  kernel_ipip_available``), Calico's way: device ``tunl0`` (address ``<own
  subnet>.0/32``, MTU underlay − 20) and per peer ``<peer subnet> via <peer
  underlayIP> dev tunl0 onlink proto 77``;
- ``userspace``: otherwise (this kernel), ``ipip_tun.IpipTunnel``: a persistent TUN
  device ``tunl-pl`` (address ``<own subnet>.0/32``, MTU underlay − 20), per peer
  ``<peer subnet> dev tunl-pl proto 77``, and a forwarding thread that sends the
  inner packets through a raw IPPROTO_IPIP socket, so the wire carries genuine
  protocol-4 packets. The peer table follows every reconcile (``peers_changed``).

Pods are ROUTED (Calico family). MTU = underlay − 20. Options: none.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, ClassVar

from harness.agent import ipip_tun
from harness.agent import netlink as nl
from harness.agent.config import AgentConfig
from harness.agent.datapath.base import (
    BaseDatapath,
    Owned,
    Peer,
    PeerObjects,
    PodInterface,
    RouteSpec,
    Tunnel,
)

log = logging.getLogger("podlab.ipip")

KERNEL_DEVICE = "tunl0"


class Ipip(BaseDatapath):
    name: ClassVar[str] = "ipip"
    pod_interface: ClassVar[PodInterface] = PodInterface.ROUTED
    overhead: ClassVar[int] = ipip_tun.OVERHEAD

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.kernel = self.cfg.ipip_impl != "userspace" and ipip_tun.kernel_ipip_available(self.ipr)
        self.impl = "kernel" if self.kernel else "userspace"
        self.device = KERNEL_DEVICE if self.kernel else ipip_tun.DEVICE
        self.tunnel: ipip_tun.IpipTunnel | None = None

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        # Both implementations: a node may have switched kernels (or modules) between
        # runs. The kernel's own tunl0 (made when the module loads) cannot be deleted;
        # retiring it strips our address and sets it down.
        return Owned(links=frozenset({KERNEL_DEVICE, ipip_tun.DEVICE}))

    def backend_data(self) -> dict[str, Any]:
        return {"IPIPImpl": self.impl}

    def setup(self, subnet: ipaddress.IPv4Network) -> None:
        address = ipaddress.IPv4Interface(f"{subnet.network_address}/32")
        if self.kernel:
            idx = nl.ifindex(self.ipr, KERNEL_DEVICE)
            if idx is None:  # the module makes tunl0 when it loads; make sure it is there
                self.ipr.link("add", ifname=KERNEL_DEVICE, kind="ipip")
                idx = nl.ifindex(self.ipr, KERNEL_DEVICE)
            assert idx is not None
            nl.ensure_addr(self.ipr, idx, address)
            nl.ensure_up(self.ipr, idx, self.mtu())
            log.info("ipip: kernel tunl0 (IP protocol 4), mtu %d", self.mtu())
            return
        old = nl.ifindex(self.ipr, KERNEL_DEVICE)
        if old is not None:  # the kernel path ran before (ipip_impl changed): retire tunl0
            self.ipr.flush_addr(index=old)
            self.ipr.link("set", index=old, state="down")
        if self.tunnel is None:
            self.tunnel = ipip_tun.IpipTunnel(
                self.ipr, self.cfg.underlay_address, address, self.cfg.underlay_mtu
            )
        self.tunnel.start()
        log.warning(
            "ipip: this kernel has no ipip module; running the USERSPACE IPIP fallback on %s "
            "(real protocol-4 packets, but every packet crosses the agent: slow)",
            ipip_tun.DEVICE,
        )

    def peer_objects(self, peer: Peer) -> PeerObjects:
        if self.kernel:
            route = RouteSpec(peer.subnet, peer.underlay_ip, KERNEL_DEVICE, onlink=True)
        else:
            route = RouteSpec(peer.subnet, None, ipip_tun.DEVICE)
        return PeerObjects(routes=[route])

    def tunnels(self) -> list[Tunnel]:
        return [Tunnel("ipip")]  # kernel tunl0 and the userspace raw socket alike

    def peers_changed(self, peers: list[Peer]) -> None:
        if self.tunnel is not None:
            self.tunnel.set_peers({p.subnet: p.underlay_ip for p in peers})

    def close(self) -> None:
        if self.tunnel is not None:
            self.tunnel.close()  # persistent TUN: the device and its routes stay
