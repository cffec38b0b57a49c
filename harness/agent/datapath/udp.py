"""Flannel's legacy ``udp`` backend: a TUN device and userspace encapsulation.

Kernel objects: a persistent TUN device ``flannel0`` (IFF_TUN, no packet info,
address ``<own subnet>.0/32``, MTU = underlay − 28 for outer IPv4 20 + UDP 8) and
per peer one route ``<peer subnet> dev flannel0 proto 77``. A forwarding thread of
the agent reads IP packets from the TUN device, looks up the peer owning the
destination's /node_prefix and sends the packet as the payload of a UDP datagram
to ``<peer underlayIP>:8285``; datagrams arriving on port 8285 from known peers
are written back to the TUN device. The device is persistent, so a restarted
agent re-attaches to it and its routes stay; forwarding pauses while no agent
runs (as with flanneld). Options: port (class attribute).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from typing import ClassVar

from harness.agent import netlink as nl
from harness.agent import tunloop
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

log = logging.getLogger("podlab.udp")

open_tun = tunloop.open_tun  # kept importable from here


class Udp(BaseDatapath):
    name: ClassVar[str] = "udp"
    pod_interface: ClassVar[PodInterface] = PodInterface.BRIDGED
    overhead: ClassVar[int] = 28
    port: ClassVar[int] = 8285
    device: ClassVar[str] = "flannel0"

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self._table: dict[int, str] = {}  # subnet network int -> peer underlay IP
        self._allowed: frozenset[str] = frozenset()
        self._mask = (0xFFFFFFFF << (32 - self.cfg.node_prefix)) & 0xFFFFFFFF
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tun = -1
        self._sock: socket.socket | None = None
        self.stats = {"tx": 0, "rx": 0, "no_peer": 0, "errors": 0}

    @classmethod
    def owned(cls, cfg: AgentConfig) -> Owned:
        return Owned(links=frozenset({cls.device}))

    def backend_data(self) -> dict[str, object]:
        return {"Port": self.port}

    def setup(self, subnet: ipaddress.IPv4Network) -> None:
        if self._tun < 0:
            self._tun = tunloop.open_tun(self.device)
        idx = nl.ifindex(self.ipr, self.device)
        if idx is None:
            raise RuntimeError(f"TUN device {self.device} missing after creation")
        nl.ensure_addr(self.ipr, idx, ipaddress.IPv4Interface(f"{subnet.network_address}/32"))
        nl.ensure_up(self.ipr, idx, self.mtu())
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.bind((str(self.cfg.underlay_address), self.port))
            sock.setblocking(False)
            self._sock = sock
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="udp-forward", daemon=True)
            self._thread.start()
            log.info(
                "udp forwarder on %s:%d <-> %s", self.cfg.underlay_address, self.port, self.device
            )

    def peer_objects(self, peer: Peer) -> PeerObjects:
        return PeerObjects(routes=[RouteSpec(peer.subnet, None, self.device)])

    def tunnels(self) -> list[Tunnel]:
        return [Tunnel("udp", self.port)]

    def peers_changed(self, peers: list[Peer]) -> None:
        # Swapped whole, never mutated: the forwarding thread reads without a lock.
        self._table = {int(p.subnet.network_address): str(p.underlay_ip) for p in peers}
        self._allowed = frozenset(str(p.underlay_ip) for p in peers)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
        if self._tun >= 0:
            os.close(self._tun)  # persistent: the device and its routes stay

    # -- the forwarding loop (select loop and burst reads: harness/agent/tunloop.py) ---
    def _run(self) -> None:
        assert self._sock is not None
        sock, tun, port = self._sock, self._tun, self.port
        tunloop.serve(
            self._stop,
            tun,
            sock,
            lambda: self._from_tun(tun, sock, port),
            lambda: self._from_udp(tun, sock),
        )

    def _from_tun(self, tun: int, sock: socket.socket, port: int) -> None:
        table, mask = self._table, self._mask
        for pkt in tunloop.tun_packets(tun):
            peer = table.get(int.from_bytes(pkt[16:20], "big") & mask)
            if peer is None:
                self.stats["no_peer"] += 1
                continue
            tunloop.send(sock, pkt, (peer, port), self.stats)

    def _from_udp(self, tun: int, sock: socket.socket) -> None:
        for _ in range(tunloop.BURST):
            try:
                data, (src, _sport) = sock.recvfrom(65535)
            except BlockingIOError:
                return
            if src not in self._allowed:
                continue
            try:
                os.write(tun, data)
                self.stats["rx"] += 1
            except OSError:
                self.stats["errors"] += 1
