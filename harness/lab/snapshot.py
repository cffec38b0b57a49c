"""A picture of the machine's lab-relevant state, to prove ``down`` leaves nothing.

Tests take one before ``up`` and one after ``down`` and compare: named
namespaces, root-namespace links (with their altnames), mounts and processes.
The machine is shared, so ``leaked(before, after, lab)`` keeps only what is
new *and* attributable to the lab (its names, tag, directory, namespaces or
pids); the raw difference is there too for a readable failure message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute

from harness.lab import sysns
from harness.plan import naming


@dataclass(frozen=True)
class Snapshot:
    netns: frozenset[str]
    links: frozenset[str]  # "ifname altname1,altname2"
    mounts: frozenset[str]  # "mountpoint source fstype"
    processes: frozenset[str]  # "pid:start:net-inode:mnt-inode:cmdline"
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def take() -> Snapshot:
    """Snapshot the machine now."""
    netns = frozenset(os.listdir(sysns.NETNS_DIR)) if sysns.NETNS_DIR.is_dir() else frozenset()
    with IPRoute() as ipr:
        links = frozenset(_link(link) for link in ipr.get_links())
    mounts = frozenset(
        _mount(line) for line in Path("/proc/self/mountinfo").read_text().split("\n") if line
    )
    procs = frozenset(p for p in (_proc(pid) for pid in sysns.pids()) if p)
    return Snapshot(netns, links, mounts, procs)


def _link(link: object) -> str:
    props = link.get_attr("IFLA_PROP_LIST")  # type: ignore[attr-defined]
    alts = [str(a) for a in props.get_attrs("IFLA_ALT_IFNAME")] if props else []
    return f"{link.get_attr('IFLA_IFNAME')} {','.join(alts)}"  # type: ignore[attr-defined]


def _mount(line: str) -> str:
    left, _, right = line.partition(" - ")
    fields = right.split()
    return f"{left.split()[4]} {fields[1] if len(fields) > 1 else ''} {fields[0] if fields else ''}"


def _proc(pid: int) -> str | None:
    """``pid:start:net-inode:mnt-inode:cgroup:cmdline`` (cmdline last: it may hold ':')."""
    start = sysns.start_time(pid)
    if start is None:
        return None
    net, mnt = sysns.ns_links(pid)
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        groups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    unified = next((g[3:] for g in groups if g.startswith("0::")), "")
    return f"{pid}:{start}:{net}:{mnt}:{unified}:{cmd}"


def diff(before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    """Everything new after (unfiltered)."""
    return {
        "netns": sorted(after.netns - before.netns),
        "links": sorted(after.links - before.links),
        "mounts": sorted(after.mounts - before.mounts),
        "processes": sorted(after.processes - before.processes),
    }


def leaked(
    before: Snapshot,
    after: Snapshot,
    lab: str,
    lab_dir: Path,
    inodes: set[int] | None = None,
    pids: set[tuple[int, int]] | None = None,
) -> dict[str, list[str]]:
    """What is new after and belongs to ``lab`` — empty when ``down`` was complete.

    Namespace inodes are recycled by the kernel once a namespace is freed, so a
    process whose namespace inode matches one of the lab's counts as the lab's
    only if that namespace still carries the lab's marks (the altname on ``lo``,
    the lab directory's bind mounts); ``pids`` are (pid, start time) pairs.
    """
    tag = naming.lab_tag(lab)
    names = (f"{naming.PREFIX}-{lab}-", str(lab_dir), f"pl{tag}", f"plm-{tag}", f"-{tag}-")
    owned = {f"{pid}:{start}:" for pid, start in pids or ()}

    def named(item: str) -> bool:
        return any(m in item for m in names)

    def our_process(item: str) -> bool:
        pid, _, net, mnt, group, cmd = item.split(":", 5)
        if any(item.startswith(o) for o in owned) or f"/{naming.PREFIX}/{lab}/" in group + "/":
            return True
        if named(cmd) or f" {lab}/" in f" {cmd}":
            return True
        return (net.isdigit() and int(net) in (inodes or ()) and _net_marked(int(pid), tag)) or (
            mnt.isdigit() and int(mnt) in (inodes or ()) and _mnt_marked(int(pid), lab_dir)
        )

    changes = diff(before, after)
    return {
        "netns": [n for n in changes["netns"] if named(n)],
        "links": [n for n in changes["links"] if named(n)],
        "mounts": [n for n in changes["mounts"] if named(n)],
        "processes": [p for p in changes["processes"] if our_process(p)],
    }


def _net_marked(pid: int, tag: str) -> bool:
    """True if process ``pid``'s netns carries lab tag ``tag``."""
    from harness.lab import links

    return links.pid_netns_tag(pid) == tag


def _mnt_marked(pid: int, lab_dir: Path) -> bool:
    try:
        return str(lab_dir) in Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return False
