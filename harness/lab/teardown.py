"""Taking a lab down, from its ledger, whatever state ``up`` left it in.

Order matters: first every process (the lab's cgroup, then a scan of
``/proc/*/ns`` for anything living in the lab's namespaces — this catches
etcd, agents or shells started later through ``podlab exec`` or ssh), then
the namespace handles, then the root-namespace links (marker-checked), then
the lab directory. Each step tolerates objects that are already gone, so
``down`` is safe to repeat and works after a crash halfway through ``up``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute

from harness.errors import LabError
from harness.lab import cgroup, links, state, sysns
from harness.lab.state import LabPaths, Ledger
from harness.plan import naming


@dataclass
class DownReport:
    """What ``down`` removed (for the CLI and for tests)."""

    lab: str
    processes: list[int] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be removed, and why


def namespace_inodes(ledger: Ledger) -> tuple[set[int], set[int], set[int]]:
    """(net, mnt, recorded-net) inodes of the lab.

    Only inodes proven to be the lab's *now* go in the first two sets: those of
    live holders (pid and start time match) and of mounted ``/run/netns``
    handles (a mounted handle pins its namespace). Inodes merely recorded in the
    ledger may have been recycled for someone else's namespace since; they come
    back separately, to be confirmed by the lab's marker before any kill.
    """
    net: set[int] = set()
    mnt: set[int] = set()
    recorded = {n.net_inode for n in ledger.nodes.values() if n.net_inode}
    recorded |= {inode for inode in ledger.bridge_netns.values() if inode}
    for node in ledger.nodes.values():
        if node.pid and sysns.alive(node.pid, node.start):
            live_net, live_mnt = sysns.ns_links(node.pid)
            net |= {i for i in (live_net,) if i}
            mnt |= {i for i in (live_mnt,) if i}
    for name in ledger.netns_names:
        handle = sysns.ns_inode(sysns.netns_path(name))
        if handle and _is_nsfs(name):
            net.add(handle)
    return net, mnt, recorded - net


def _is_nsfs(name: str) -> bool:
    """True if /run/netns/<name> is a mounted namespace handle (not a stray file)."""
    target = str(sysns.netns_path(name))
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == target for line in info)


def kill_processes(ledger: Ledger) -> list[int]:
    """Kill every process of the lab; the calling process is never a candidate.

    The node holders go last: while a holder lives, its mount namespace (matched
    by inode) cannot die and have its inode recycled for someone else's, so the
    scan never mistakes an unrelated process for one of ours. Inodes are read
    afresh on every pass for the same reason.
    """
    root_net, root_mnt = sysns.ns_links(1)
    tag = naming.lab_tag(ledger.lab)
    holders = {n.pid for n in ledger.nodes.values() if n.pid and sysns.alive(n.pid, n.start)}

    def ours(pid: int) -> bool:
        return links.pid_netns_tag(pid) == tag

    killed: list[int] = cgroup.kill_lab(ledger.lab)
    for _ in range(5):  # processes may fork while we kill; repeat until none is found
        net, mnt, recorded = namespace_inodes(ledger)
        for inodes in (net, mnt, recorded):
            inodes.discard(root_net or -1)
            inodes.discard(root_mnt or -1)
        found = sysns.kill_where(net, mnt, {os.getpid(), *holders}, recorded, ours)
        killed += found
        if not found:
            break
    for node in ledger.nodes.values():  # holders, and sshds whose namespaces were unreadable
        for pid, start in ((node.sshd_pid, node.sshd_start), (node.pid, node.start)):
            if pid and sysns.kill_pid(pid, start):
                killed.append(pid)
    return sorted(set(killed))


def down(ledger: Ledger, paths: LabPaths, keep_dir: bool = False) -> DownReport:
    """Remove everything the ledger says the lab made."""
    report = DownReport(ledger.lab)
    report.processes = _ssh_masters(paths) + kill_processes(ledger)
    for name in ledger.netns_names:
        remove_netns(name, report.netns, report.problems)
    for mountpoint in ledger.mounts:
        sysns.umount(mountpoint)
    with IPRoute() as ipr:
        for ifname in reversed(ledger.root_links):
            if links.delete_link(ipr, ifname, ledger.lab):
                report.links.append(ifname)
    if not keep_dir:
        remove_lab_dir(paths)
        _remove_inventory(ledger.inventory)
    state.unregister(ledger.lab, paths)
    return report


def remove_netns(name: str, removed: list[str], problems: list[str]) -> None:
    """Remove the handle ``name`` into ``removed``; one that stays pinned goes into
    ``problems`` (the rest of the lab is still removed; the CLI names what stayed)."""
    try:
        if sysns.remove_netns(name):
            removed.append(name)
    except LabError as exc:
        problems.append(str(exc))


def _ssh_masters(paths: LabPaths) -> list[int]:
    """ssh clients of this lab (Ansible's and testinfra's ControlPersist masters,
    whose control sockets live in the lab directory): they run in the root
    namespace, outside the lab's cgroup, and a VM that vanishes does not close
    their connections, so they would linger until their persist time runs out.
    Chosen by their command line naming the lab directory, killed by pid."""
    marker = str(paths.root.resolve()) if paths.root.exists() else str(paths.root)
    killed = []
    for pid in sysns.pids():
        if pid == os.getpid():
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if comm == "ssh" and marker in argv and sysns.kill_pid(pid, sysns.start_time(pid)):
            killed.append(pid)
    return killed


def _remove_inventory(path: str | None) -> None:
    """Delete the inventory ``up`` generated, and only a file that says so in its header."""
    if not path:
        return
    inventory = Path(path)
    try:
        with inventory.open() as f:
            generated = f.readline().startswith("# Generated by `podlab up`")
    except OSError:
        return
    if generated:
        inventory.unlink(missing_ok=True)


def remove_lab_dir(paths: LabPaths) -> None:
    """Delete a lab directory, but only one that carries our marker."""
    if paths.marker.exists():
        shutil.rmtree(paths.root, ignore_errors=True)
