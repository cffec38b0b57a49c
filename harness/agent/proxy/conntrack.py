"""Forget conntrack entries that still point at a removed endpoint.

A proxy mode's DNAT decision is taken once per flow, on its first packet, and
conntrack keeps it: after an endpoint leaves a Service, packets of flows that
already chose it keep going there. For a TCP connection that was answered that
is right (it finishes on its pod, which a graceful delete keeps serving). It is
wrong for two kinds, which kube-proxy also clears:

- TCP entries in SYN_SENT for more than ``UNANSWERED_S``: the endpoint does not
  answer (its node is down). The client retransmits the SYN, or opens a new
  connection whose source port meets a stale entry (they live 120 s), and
  lands on the dead pod again. Once the entry is gone, the next SYN is a new
  flow and is balanced over the endpoints that are left. A younger one may be
  a handshake in flight to a pod that still serves (a graceful delete): its
  SYN-ACK needs the entry, so it is left for a later sweep.
- UDP entries: UDP has no end, so a client that keeps sending would stay on
  the removed endpoint until it goes quiet for the UDP timeout.

Only DNATed entries are touched (a service flow; direct pod-to-pod traffic to
that address is left alone).
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from pyroute2 import Conntrack
from pyroute2.netns import setns

from harness.agent.proxy.model import ServicePort
from harness.exec import run

log = logging.getLogger("podlab.proxy.conntrack")

IPS_DST_NAT = 0x20  # nf_conntrack_common.h: IPS_DST_NAT_BIT = 5
TCP_SYN_SENT = 1  # enum tcp_conntrack
UNANSWERED_S = 2  # a SYN this old with no answer: the endpoint is not there
SYN_SENT_TIMEOUT = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_syn_sent"
PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}

Target = tuple[str, str, int]  # protocol, endpoint address, endpoint port


def targets(ports: Iterable[ServicePort]) -> set[Target]:
    """Every (protocol, address, port) some service port sends traffic to."""
    return {(p.protocol, ep.ip, ep.port) for p in ports for ep in p.endpoints}


def forget(gone: set[Target], netns: str | None = None) -> int:
    """Delete the stale entries towards ``gone`` (in ``netns``, else here); returns how many."""
    if not gone:
        return 0
    if netns is None:
        return _forget(gone)
    result: list[int] = []  # setns() moves only the calling thread: use a fresh one

    def run() -> None:
        setns(netns)
        result.append(_forget(gone))

    t = threading.Thread(target=run, name="conntrack-forget")
    t.start()
    t.join()
    return result[0] if result else 0


def _forget(gone: set[Target]) -> int:
    removed = 0
    # an entry's timeout counts down from this: age = syn_sent - remaining
    syn_sent = int(Path(SYN_SENT_TIMEOUT).read_text())  # per netns: read after setns
    names = {number: name for name, number in PROTOS.items()}
    with Conntrack() as ct:
        # one pass over the table (a dump per endpoint would read it once each)
        for entry in list(ct.dump_entries()):
            reply = entry.tuple_reply
            proto = names.get(reply.proto or -1)
            if proto is None or (proto, reply.saddr, reply.sport) not in gone:
                continue
            if not entry.status & IPS_DST_NAT:
                continue
            if proto == "tcp" and (
                entry.protoinfo.state != TCP_SYN_SENT
                or syn_sent - (entry.timeout or 0) < UNANSWERED_S
            ):
                continue  # answered, or may still be: it finishes on its pod
            try:
                ct.delete(entry)
                removed += 1
            except OSError:  # gone meanwhile (timed out, or the SYN was answered)
                pass
    if removed:
        log.info("forgot %d conntrack entries towards removed endpoints", removed)
    return removed


def forget_niced(gone: set[Target], netns: str | None = None, timeout: float = 120.0) -> int:
    """``forget`` in a child process at the lowest CPU priority.

    Why: pyroute2 parses every entry of the table in Python, which took 20-30 s
    on a busy 2-core machine for a node whose pods open 50 connections/s; in a
    thread of the agent that holds the GIL against the programming worker and
    the mesh's reachability probes. A child has its own interpreter and yields
    the CPU to them.
    """
    if not gone:
        return 0
    argv = ["nice", "-n", "19", sys.executable, "-m", "harness.agent.proxy.conntrack",
            json.dumps(sorted(gone))]  # fmt: skip
    out = run(argv, timeout=timeout, netns=netns).stdout.strip()
    return int(out.splitlines()[-1]) if out else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.agent.proxy.conntrack '[["tcp", "10.244.1.2", 8080], …]'``:
    forget the stale entries towards those endpoints here; prints how many."""
    raw = json.loads((argv if argv is not None else sys.argv[1:])[0])
    print(_forget({(str(p), str(ip), int(port)) for p, ip, port in raw}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
