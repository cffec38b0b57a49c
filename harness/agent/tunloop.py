"""What the userspace tunnels share: the TUN device, the select loop, burst reads, sends.

Two modes move packets through the agent: Flannel's ``udp`` (datapath/udp.py:
inner packet as a UDP payload) and the userspace IPIP fallback (ipip_tun.py:
inner packet behind an outer IPv4 header, protocol 4). Both read IP packets from
a persistent TUN device and write packets arriving on a socket back into it;
only the lookup and the framing differ, so the loop lives here once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
#: packets handled per readiness event before the loop looks at the other side
BURST = 64


def open_tun(name: str) -> int:
    """Create (or re-attach to) persistent TUN device ``name``; returns its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    fcntl.ioctl(fd, TUNSETPERSIST, 1)
    return fd


def serve(
    stop: threading.Event,
    tun: int,
    sock: socket.socket,
    from_tun: Callable[[], None],
    from_sock: Callable[[], None],
) -> None:
    """Call ``from_tun`` / ``from_sock`` whenever that side is readable, until ``stop``."""
    sfd = sock.fileno()
    while not stop.is_set():
        try:
            ready, _, _ = select.select([tun, sfd], [], [], 0.5)
        except InterruptedError:
            continue
        if tun in ready:
            from_tun()
        if sfd in ready:
            from_sock()


def tun_packets(tun: int) -> Iterator[bytes]:
    """Up to ``BURST`` IPv4 packets waiting on the (non-blocking) TUN device."""
    for _ in range(BURST):
        try:
            pkt = os.read(tun, 65535)
        except BlockingIOError:
            return
        if len(pkt) >= 20 and pkt[0] >> 4 == 4:
            yield pkt


def send(sock: socket.socket, data: bytes, addr: tuple[str, int], stats: dict[str, int]) -> None:
    """``sendto`` counting ``tx`` / ``errors``; a full socket buffer drops (like a NIC)."""
    try:
        sock.sendto(data, addr)
        stats["tx"] += 1
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
            stats["errors"] += 1
