"""Data-path reachability of remote nodes: ICMP echo from this node, like cilium-health.

Why a probe at all: a remote cluster's backends arrive through its etcd (the
mirror), and a cut network does not change etcd — Cilium keeps a dead
cluster's backends forever by default. What decides whether a remote backend
can take a new connection is whether its node answers over the path traffic
would take. So every node pings the underlay address of each remote node that
hosts a backend it may use, every ``interval_s`` (0.3 s from the services
controller), from its own network namespace:

- a node is DOWN after ``misses`` (4) consecutive probes went unanswered, each
  having had at least one interval to answer: at most about
  ``(misses + 1) × interval_s`` = 1.5 s after the cut (a starved agent takes
  longer: measured up to ~5 s at a load average of 24 on 2 cores);
- it is UP again at the first reply (within one interval of the network's
  return). A new target starts UP (a restart must not drop backends).
- the count is of probes actually sent, so a starved agent thread (a busy
  machine) sends fewer and never condemns a node for its own silence.

The kernel answers echo requests, not the remote agent: an agent restart or a
remote etcd outage (the control plane) changes nothing here, only the network
does. Every cross-cluster datapath (VXLAN to the remote underlay, native
routes through the lab's routers, WireGuard) rides on that underlay path.
Limit: a failure of pod routes alone (a BGP route withdrawn while the underlay
answers) is not seen.

Kernel objects: one raw ICMP socket in the node's namespace (CAP_NET_RAW; the
agent runs as root). Nothing is configured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping

from pyroute2.netns import setns

log = logging.getLogger("podlab.mesh.reach")
Key = tuple[str, str]  # (cluster, node)
ECHO_REQUEST, ECHO_REPLY = 8, 0


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = b"podlab-reach"
    head = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(head + payload), ident, seq) + payload


def parse_reply(packet: bytes) -> tuple[str, int] | None:
    """(source address, identifier) of an echo reply as a raw socket hands it over."""
    if len(packet) < 28:
        return None
    ihl = (packet[0] & 0x0F) * 4
    kind, _, _, ident, _ = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
    if kind != ECHO_REPLY:
        return None
    return socket.inet_ntoa(packet[12:16]), ident


class Reachability:
    """Which of the targets (key → underlay address) answer; ``on_change`` is called
    (from the probe thread) whenever the set of unreachable keys changes."""

    def __init__(
        self,
        netns: str | None = None,
        interval_s: float = 0.3,
        misses: int = 4,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.netns, self.interval_s, self.misses = netns, interval_s, misses
        self.on_change = on_change
        self.ident = (os.getpid() ^ id(self)) & 0xFFFF
        self._targets: dict[Key, str] = {}
        self._unanswered: dict[str, int] = {}  # address → probes sent since its last reply
        self._down: frozenset[Key] = frozenset()
        self._lock = threading.Lock()
        self._seq = 0

    def set_targets(self, targets: Mapping[Key, str]) -> None:
        """The nodes to watch (a new one starts reachable; a dropped one is forgotten)."""
        with self._lock:
            self._targets = dict(targets)
            keep = set(self._targets.values())
            self._unanswered = {a: n for a, n in self._unanswered.items() if a in keep}
            self._down = frozenset(k for k in self._down if k in self._targets)

    def down(self) -> frozenset[Key]:
        """The keys whose node does not answer (one reference read: no lock needed)."""
        return self._down

    def start(self, stop: threading.Event) -> threading.Thread:
        t = threading.Thread(target=self._run, args=(stop,), daemon=True, name="mesh-reach")
        t.start()
        return t

    def _run(self, stop: threading.Event) -> None:
        try:
            if self.netns:
                setns(self.netns)
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        except OSError as exc:
            log.error("data-path probes of remote nodes disabled: %s", exc)
            return
        try:
            next_tick = 0.0
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_tick:
                    self._judge()
                    self._send(sock)
                    next_tick = now + self.interval_s
                ready, _, _ = select.select([sock], [], [], max(0.0, next_tick - now))
                if ready:
                    self._receive(sock)
        finally:
            sock.close()

    def _send(self, sock: socket.socket) -> None:
        with self._lock:
            addrs = sorted(set(self._targets.values()))
            self._seq = (self._seq + 1) & 0xFFFF
            seq = self._seq
        for addr in addrs:
            with contextlib.suppress(OSError):  # no route: counts as unanswered
                sock.sendto(echo_request(self.ident, seq), (addr, 0))
            with self._lock:
                self._unanswered[addr] = self._unanswered.get(addr, 0) + 1

    def _receive(self, sock: socket.socket) -> None:
        """Drain every queued packet (a reply read late still counts)."""
        answered = set()
        while True:
            try:
                packet = sock.recv(2048, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            reply = parse_reply(packet)
            if reply and reply[1] == self.ident:
                answered.add(reply[0])
        if answered:
            with self._lock:
                for addr in answered:
                    if addr in self._unanswered:
                        self._unanswered[addr] = 0
            self._judge()

    def _judge(self) -> None:
        with self._lock:
            down = frozenset(
                key
                for key, addr in self._targets.items()
                if self._unanswered.get(addr, 0) >= self.misses
            )
            changed = down != self._down
            gone, back = down - self._down, self._down - down
            self._down = down
        if changed:
            for key in sorted(gone, key=str):
                log.info("remote node %s unreachable over the data path: its backends leave", key)
            for key in sorted(back, key=str):
                log.info("remote node %s reachable again: its backends return", key)
            self.on_change()
