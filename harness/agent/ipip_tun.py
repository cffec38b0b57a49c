"""IP-in-IP for the Calico-style ``ipip`` mode: kernel probe and a userspace fallback.

Calico's ``ipip`` mode uses the kernel's ``tunl0`` (module ``ipip``): the pod
packet becomes the payload of an outer IPv4 header with protocol 4 (IPPROTO_IPIP)
between the two nodes' underlay addresses, 20 bytes of overhead. Where the module
exists the mode should use it (``kernel_ipip_available``). This kernel has none,
so ``IpipTunnel`` does the same in userspace and puts the same packets on the wire:

- a persistent TUN device (``DEVICE`` = ``tunl-pl``, IFF_TUN without packet info,
  address ``<own subnet>.0/32``, MTU = underlay − 20); the mode routes each peer's
  pod subnet ``dev tunl-pl``;
- one raw socket ``AF_INET/SOCK_RAW/IPPROTO_IPIP`` bound to the underlay address:
  an inner packet read from the TUN device is sent to the underlay address of the
  peer owning its destination (longest prefix in the peer table), the kernel adds
  the outer header with protocol 4; protocol-4 packets from known peers arriving on
  the socket have their outer header stripped and the inner packet is written to
  the TUN device, where the kernel routes it on to the pod.

The peer table is replaced whole by ``set_peers`` (any thread, any time); the
forwarding thread only ever reads the current table. ``close`` stops the thread
and keeps the device and its routes, as the ``udp`` mode does.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Mapping

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.agent import netlink as nl
from harness.agent import tunloop
from harness.agent.tunloop import open_tun

log = logging.getLogger("podlab.ipip")

DEVICE = "tunl-pl"
OVERHEAD = 20  # outer IPv4 header
IPPROTO_IPIP = 4
PROBE_LINK = "pl-ipip-probe"


def kernel_ipip_available(ipr: IPRoute) -> bool:
    """True when the kernel can make ipip links (so the mode should use ``tunl0``).

    ``/sys/module/ipip`` answers when the module is loaded; otherwise one throwaway
    ipip link is created and deleted in the namespace ``ipr`` is bound to (which
    also lets the kernel autoload the module where it can).
    """
    if nl.load_module("ipip"):
        return True
    try:
        ipr.link("add", ifname=PROBE_LINK, kind="ipip")
    except NetlinkError as exc:
        log.info("no kernel ipip: %s", exc)
        return False
    nl.ignore_missing(lambda: ipr.link("del", ifname=PROBE_LINK))
    return True


def mtu_for(underlay_mtu: int) -> int:
    """Pod / tunnel MTU for IPIP: the outer IPv4 header takes 20 bytes."""
    return underlay_mtu - OVERHEAD


class _Table:
    """An immutable longest-prefix-match table: inner destination → peer underlay IP."""

    def __init__(self, peers: Mapping[ipaddress.IPv4Network, ipaddress.IPv4Address]) -> None:
        rows = sorted(peers.items(), key=lambda kv: -kv[0].prefixlen)
        self.rows = tuple((int(net.network_address), int(net.netmask), str(ip)) for net, ip in rows)
        self.sources = frozenset(str(ip) for ip in peers.values())

    def lookup(self, dst: int) -> str | None:
        for net, mask, peer in self.rows:
            if dst & mask == net:
                return peer
        return None


class IpipTunnel:
    """The userspace IPIP endpoint of one node; ``open`` then ``start``, ``close`` at the end.

    Create it in the node's namespace (the agent runs there): the TUN device, the
    raw socket and ``ipr`` all belong to the namespace they were created in.
    """

    def __init__(
        self,
        ipr: IPRoute,
        local: ipaddress.IPv4Address,
        address: ipaddress.IPv4Interface,
        underlay_mtu: int,
        device: str = DEVICE,
    ) -> None:
        self.ipr, self.local, self.address, self.device = ipr, local, address, device
        self.mtu = mtu_for(underlay_mtu)
        self._table = _Table({})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tun = -1
        self._sock: socket.socket | None = None
        self.stats = {"tx": 0, "rx": 0, "no_peer": 0, "unknown_source": 0, "errors": 0}

    def open(self) -> None:
        """Ensure the TUN device (address, MTU, up) and the raw socket exist."""
        if self._tun < 0:
            self._tun = open_tun(self.device)
        idx = nl.ifindex(self.ipr, self.device)
        if idx is None:
            raise RuntimeError(f"TUN device {self.device} missing after creation")
        nl.ensure_addr(self.ipr, idx, self.address)
        nl.ensure_up(self.ipr, idx, self.mtu)
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.bind((str(self.local), 0))  # the outer source address
            sock.setblocking(False)
            self._sock = sock

    def start(self) -> None:
        """Start the forwarding thread (idempotent)."""
        if self._thread is not None:
            return
        self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ipip-forward", daemon=True)
        self._thread.start()
        log.info("userspace IPIP (proto 4) on %s <-> %s, mtu %d", self.local, self.device, self.mtu)

    def set_peers(self, peers: Mapping[ipaddress.IPv4Network, ipaddress.IPv4Address]) -> None:
        """Replace the peer table: pod subnet → that node's underlay address."""
        table = _Table(peers)
        with self._lock:  # writers serialise; the forwarding thread reads one reference
            self._table = table

    def peers(self) -> dict[ipaddress.IPv4Network, ipaddress.IPv4Address]:
        rows = self._table.rows
        return {
            ipaddress.IPv4Network((net, bin(mask).count("1"))): ipaddress.IPv4Address(peer)
            for net, mask, peer in rows
        }

    def close(self) -> None:
        """Stop forwarding; the TUN device and the routes through it stay (persistent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._tun >= 0:
            os.close(self._tun)
            self._tun = -1

    # -- the forwarding loop (select loop and burst reads: harness/agent/tunloop.py) ---
    def _run(self) -> None:
        assert self._sock is not None
        sock, tun = self._sock, self._tun
        tunloop.serve(
            self._stop,
            tun,
            sock,
            lambda: self._from_tun(tun, sock),
            lambda: self._from_wire(tun, sock),
        )

    def _from_tun(self, tun: int, sock: socket.socket) -> None:
        for pkt in tunloop.tun_packets(tun):
            peer = self._table.lookup(int.from_bytes(pkt[16:20], "big"))
            if peer is None:
                self.stats["no_peer"] += 1
                continue
            tunloop.send(sock, pkt, (peer, 0), self.stats)  # kernel adds the outer header

    def _from_wire(self, tun: int, sock: socket.socket) -> None:
        for _ in range(tunloop.BURST):
            try:
                data, (src, _) = sock.recvfrom(65535)
            except BlockingIOError:
                return
            if src not in self._table.sources:
                self.stats["unknown_source"] += 1
                continue
            inner = data[(data[0] & 0x0F) * 4 :]  # raw sockets see the outer header too
            if len(inner) < 20 or inner[0] >> 4 != 4:
                continue
            try:
                os.write(tun, inner)
                self.stats["rx"] += 1
            except OSError:
                self.stats["errors"] += 1
