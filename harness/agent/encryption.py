"""``encryption: wireguard`` layered on any datapath mode (Calico / Cilium / Flannel style).

``layer(dp, cfg, ipr)`` returns the mode unchanged, or wrapped in ``WireGuardLayer``,
which keeps the mode's devices, pod interface style and userspace helpers but
replaces its peer routes: every peer's pod subnet is routed ``dev wg-<hash>``
(proto 77), the WireGuard peer for it has that subnet as its allowed IPs and the
peer's underlay address as its endpoint. The mode's own encapsulation is not
applied underneath (so in ``bgp`` BIRD keeps its sessions but exports nothing to
the kernel); pod MTU = underlay − 60 whatever the mode.

Keys are made on the node (``wireguard.ensure_private_key``: 0600 file under the
state dir, never in argv, logs or etcd); the lease and the node record carry only
``backend.WireguardPublicKey``, ``backend.WireguardPort`` and
``backend.WireguardInterface`` (its name, for tools on the node). A peer that publishes
no key (encryption off there) gets no route at all: its pods are unreachable rather
than reached in clear, and the problem is reported in the node record.
Interface: kernel ``wireguard`` where the module exists, else ``wireguard-go``
(per-node interface names, because its sockets share /var/run/wireguard).

Node-wide objects (``WireGuardLayer.owned``): the interface ``wg-<hash>``, the
wireguard-go process (pid file, log, control socket). A node that turns
encryption off removes them at its next start; the private key file stays, so
turning it on again keeps the node's public key. ``LAYERS`` is the table of
encryption layers by ``encryption`` setting (one today).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from pyroute2 import IPRoute

from harness.agent import wireguard
from harness.agent.config import AgentConfig
from harness.agent.datapath.base import (
    Daemon,
    Datapath,
    Owned,
    Peer,
    PeerObjects,
    PodInterface,
    RouteSpec,
    Tunnel,
)

log = logging.getLogger("podlab.encryption")


def interface(cfg: AgentConfig) -> str:
    """This node's WireGuard interface: agent.yaml's ``wireguard_interface`` or the
    default per-node name (``wireguard.iface_name``)."""
    return cfg.wireguard_interface or wireguard.iface_name(cfg.node)


class WireGuardLayer:
    """A ``Datapath`` whose inter-node pod traffic goes through this node's wg interface."""

    def __init__(self, inner: Datapath, cfg: AgentConfig, ipr: IPRoute) -> None:
        self.inner, self.cfg = inner, cfg
        self.name = inner.name
        self.pod_interface = inner.pod_interface
        self.wg = wireguard.WireGuard(
            ipr, cfg.node, cfg.state_dir, cfg.run_dir,
            force_userspace=cfg.wireguard_impl == "wireguard-go", name=interface(cfg),
        )  # fmt: skip
        self._public: str | None = None

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        """The interface and, for wireguard-go, its process, log and control socket."""
        name = interface(cfg)
        return Owned(
            links=frozenset({name}),
            daemons=frozenset({Daemon(cfg.run_dir / wireguard.PIDFILE, "wireguard-go")}),
            files=frozenset(
                {wireguard.SOCKET_DIR / f"{name}.sock", cfg.run_dir / wireguard.LOGFILE}
            ),
        )

    @property
    def public_key(self) -> str:
        """Derived from the node's private key file (created on first use)."""
        if self._public is None:
            self._public = wireguard.public_key(wireguard.ensure_private_key(self.cfg.state_dir))
        return self._public

    def mtu(self) -> int:
        flannel = self.pod_interface == PodInterface.BRIDGED  # the Flannel family
        return wireguard.mtu_for(self.cfg.underlay_mtu, flannel=flannel)

    def backend_data(self) -> dict[str, Any]:
        return {
            **self.inner.backend_data(),
            "Encryption": "wireguard",
            "WireguardPublicKey": self.public_key,
            "WireguardPort": self.wg.port,
            "WireguardInterface": self.wg.name,
            # kernel or wireguard-go, known once up: the conformance results name the fallback
            **({"WireguardImpl": self.wg.kind} if self.wg.kind else {}),
        }

    def setup(self, subnet: ipaddress.IPv4Network) -> None:
        self.inner.setup(subnet)
        # <subnet>.0/32 on the wg device: node-originated packets to peer pods carry a
        # source inside our pod subnet, which is what the peer allows from us.
        address = ipaddress.IPv4Interface(f"{subnet.network_address}/32")
        self._public = self.wg.up(self.mtu(), address)
        log.info(
            "WireGuard on %s (%s), port %d, pod MTU %d, layered on mode %s",
            self.wg.name,
            self.wg.kind,
            self.wg.port,
            self.mtu(),
            self.name,
        )

    def devices(self) -> list[str]:
        return self.inner.devices()

    def refuse(self, peers: list[Peer]) -> tuple[list[Peer], list[str]]:
        keyed = [p for p in peers if p.backend.get("WireguardPublicKey")]
        clear = [p for p in peers if not p.backend.get("WireguardPublicKey")]
        if not clear:
            return keyed, []
        named = ", ".join(p.node for p in clear)
        return keyed, [
            f"encryption wireguard: peers {named} publish no WireGuard public key "
            "(encryption off there?); no route installed to their pods, so nothing is "
            "sent to them in clear"
        ]

    def peer_objects(self, peer: Peer) -> PeerObjects:
        return PeerObjects(routes=[RouteSpec(peer.subnet, None, self.wg.name)])

    def peers_changed(self, peers: list[Peer]) -> None:
        self.inner.peers_changed(peers)
        specs = [
            wireguard.PeerSpec(
                str(p.backend["WireguardPublicKey"]),
                (p.underlay_ip, int(p.backend.get("WireguardPort", wireguard.DEFAULT_PORT))),
                (p.subnet,),
            )
            for p in peers
        ]
        self.wg.set_peers(specs)

    def tunnels(self) -> list[Tunnel]:
        # the mode's own encapsulation is not applied underneath: only WireGuard's UDP
        return [Tunnel("udp", self.wg.port)]

    def close(self) -> None:
        self.inner.close()  # the wg interface (and wireguard-go) stay, like other devices


#: Encryption layers by the ``encryption`` setting ("none" has no entry).
LAYERS: dict[str, type[WireGuardLayer]] = {"wireguard": WireGuardLayer}


def layer(dp: Datapath, cfg: AgentConfig, ipr: IPRoute) -> Datapath:
    """The datapath the agent runs: ``dp``, with WireGuard on top when configured."""
    cls = LAYERS.get(cfg.encryption)
    if cls is not None:
        return cls(dp, cfg, ipr)  # type: ignore[return-value]
    return dp
