"""Leftovers of another mode: what this node's configuration does not own, removed at start.

A node changes mode (or turns encryption on or off) by restarting its agent with
a new agent.yaml, and may have been switched while its agent was down. What the
old mode made node-wide — a ``flannel.1`` a Calico mode would otherwise keep, a
BIRD still announcing routes, a wireguard-go and its interface, ``cni0`` and its
gateway address — must go, or the node is not the node a fresh agent in the new
mode would make (Flannel → Calico migrations trip over a stale ``flannel.1``).

Nothing here knows a mode. Each part declares what it owns (``owned(cfg)`` on
every mode of ``DATAPATHS``, every layer of ``LAYERS``, the mesh layer (its
``vxlan.mesh``, used only while ``mesh.uses_tunnel``), every pod interface style
of ``POD_INTERFACES``); ``leftovers`` is what any part declares minus what
the configured parts declare, and ``retire`` removes it with the same mechanics
for every kind of object:

- helper daemons by pid file: SIGTERM, then SIGKILL — only a live process with
  the declared name in this node's network namespace (a stale pid file never
  kills a stranger); then the pid file;
- links: deleted; a device the kernel refuses to delete (the ``tunl0`` the ipip
  module makes in every namespace) loses its addresses and goes down;
- main-table routes of a daemon's protocol (a killed BIRD leaves ``proto bird``);
- files: configs, control sockets and logs of those daemons.

Per-peer routes (proto 77) are the reconciler's, per-pod veths the pod
manager's; neighbours and FDB entries go with their devices.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Iterable
from functools import partial

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.agent import netlink as nl
from harness.agent import procs
from harness.agent.config import AgentConfig
from harness.agent.datapath import mesh
from harness.agent.datapath.base import NOTHING, Daemon, Owned, PodInterface
from harness.agent.datapath.registry import DATAPATHS
from harness.agent.encryption import LAYERS

log = logging.getLogger("podlab.retire")

#: What each pod interface style makes node-wide (podlab-cni makes them: harness/cni):
#: the bridged style's ``cni0``, whose gateway address and connected route would
#: answer for the pod subnet under a routed mode; the routed style nothing (each
#: ``cali*`` veth is re-plumbed with its pod).
POD_STYLES: dict[PodInterface, Owned] = {
    PodInterface.BRIDGED: Owned(links=frozenset({"cni0"})),
    PodInterface.ROUTED: NOTHING,
}

STOP_S = 5.0  # a daemon's time to exit on SIGTERM (BIRD withdraws its routes meanwhile)


def _union(parts: Iterable[Owned]) -> Owned:
    return functools.reduce(lambda a, b: a | b, parts, NOTHING)


def owned_by(cfg: AgentConfig) -> Owned:
    """What the configured mode, encryption, mesh and pod interface style own here."""
    mode = DATAPATHS[cfg.mode]
    layer = LAYERS.get(cfg.encryption)
    return (
        mode.owned(cfg)
        | POD_STYLES[mode.pod_interface]
        | (layer.owned(cfg) if layer is not None else NOTHING)
        | (mesh.MeshLayer.owned(cfg) if mesh.uses_tunnel(cfg) else NOTHING)
    )


def owned_by_any(cfg: AgentConfig) -> Owned:
    """What any mode, layer or style this agent implements may own on this node."""
    return _union(
        [m.owned(cfg) for m in DATAPATHS.values()]
        + [layer.owned(cfg) for layer in LAYERS.values()]
        + [mesh.MeshLayer.owned(cfg)]
        + list(POD_STYLES.values())
    )


def leftovers(cfg: AgentConfig) -> Owned:
    """What another configuration would have made here and this one does not own."""
    return owned_by_any(cfg) - owned_by(cfg)


def retire(ipr: IPRoute, what: Owned, why: str) -> list[str]:
    """Remove whatever of ``what`` exists in this namespace; returns what was removed.

    Daemons first (wireguard-go removes its own interface, BIRD its routes), then
    links, stray routes and files. Idempotent: a second call finds nothing.
    """
    removed: list[str] = []
    for daemon in sorted(what.daemons, key=lambda d: str(d.pidfile)):
        if _stop(daemon):
            removed.append(f"{daemon.comm} (pid file {daemon.pidfile})")
    for name in sorted(what.links):
        if (done := _drop_link(ipr, name)) is not None:
            removed.append(f"link {name}{done}")
    for proto in sorted(what.route_protos):
        removed += [f"route {dst} proto {proto}" for dst in _flush_routes(ipr, proto)]
    for path in sorted(what.files):
        if path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(f"file {path}")
    for item in removed:
        log.info("removed %s: %s", item, why)
    return removed


def _pid(daemon: Daemon) -> int | None:
    """The daemon's pid if its pid file names a live ``comm`` in our network namespace."""
    try:
        pid = int(daemon.pidfile.read_text().strip())
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        ours = nl.netns_inode(f"/proc/{pid}/ns/net") == nl.netns_inode("/proc/thread-self/ns/net")
    except (OSError, ValueError):
        return None
    return pid if comm == daemon.comm and ours and procs.exists(pid) else None


def _stop(daemon: Daemon) -> bool:
    """Stop the daemon by its pid (TERM, then KILL) and drop its pid file; True if it ran."""
    pid = _pid(daemon)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        while time.monotonic() < deadline and procs.exists(pid):
            time.sleep(0.05)
        if procs.exists(pid):
            log.warning("%s pid %d ignored SIGTERM; killing it", daemon.comm, pid)
            os.kill(pid, signal.SIGKILL)
    daemon.pidfile.unlink(missing_ok=True)
    return pid is not None


def _drop_link(ipr: IPRoute, name: str) -> str | None:
    """Delete link ``name``, or strip and down it if the kernel keeps it (the ipip
    module's own ``tunl0``, which it makes bare in every namespace). Returns how it
    was removed, or None when there was nothing of ours to remove."""
    idx = nl.ifindex(ipr, name)
    if idx is None:
        return None
    with contextlib.suppress(NetlinkError):  # the kernel may refuse, or ignore, the delete
        ipr.link("del", index=idx)
    if nl.ifindex(ipr, name) is None:
        return ""
    addrs = ipr.get_addr(index=idx, family=nl.AF_INET)
    if not addrs and not ipr.get_links(idx)[0]["flags"] & 1:  # bare and down: the kernel's
        return None
    for a in addrs:
        address, plen = nl.attr(a, "IFA_ADDRESS"), a["prefixlen"]
        nl.ignore_missing(partial(ipr.addr, "del", index=idx, address=address, prefixlen=plen))
    ipr.link("set", index=idx, state="down")
    return " (kept by the kernel: addresses removed, down)"


def _flush_routes(ipr: IPRoute, proto: int) -> list[str]:
    """Delete every main-table IPv4 route stamped ``proto``; returns their destinations."""
    gone = []
    for r in ipr.get_routes(table=nl.MAIN_TABLE, family=nl.AF_INET, proto=proto):
        if r["proto"] != proto:
            continue
        dst, plen = nl.attr(r, "RTA_DST", "0.0.0.0"), r["dst_len"]
        nl.ignore_missing(
            partial(ipr.route, "del", dst=dst, dst_len=plen, proto=proto, table=nl.MAIN_TABLE)
        )
        gone.append(f"{dst}/{plen}")
    return gone
