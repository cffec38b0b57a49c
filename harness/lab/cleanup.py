"""``podlab cleanup``: find stale labs by their markers and remove only those.

A lab is *live* while its ledger says ``up`` and any of its holders runs (a
degraded lab is the user's to inspect or take down, not cleanup's), or while
the ``podlab up`` building it still runs. Everything else carrying a podlab marker
is stale and removed:

- ledgers of dead or crashed labs → a full ``down`` from the ledger;
- named namespaces ``/run/netns/podlab-*`` whose ``lo`` carries the altname
  marker of a lab tag no live lab owns (unmarked namespaces, e.g. other tools'
  or tests' ``podlab-t-…``, are left alone and only reported);
- root-namespace links with a marker of no live lab;
- lab cgroups ``podlab/<lab>`` of no live lab;
- registry entries pointing at nothing;
- ``podlab-preflight-<pid>`` probe namespaces whose process died.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyroute2 import IPRoute

from harness.errors import LabError, UserError
from harness.lab import cgroup, links, netns, preflight, state, sysns, teardown
from harness.lab.state import Ledger
from harness.plan import naming


@dataclass
class CleanupReport:
    labs: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # could not be removed, and why

    def lines(self) -> list[str]:
        if not (self.labs or self.netns or self.links or self.cgroups):
            out = ["nothing stale"]
        else:
            out = [
                f"stale labs taken down: {', '.join(self.labs) or '-'}",
                f"stale namespaces removed: {', '.join(self.netns) or '-'}",
                f"stale host links removed: {', '.join(self.links) or '-'}",
                f"stale cgroups removed: {', '.join(self.cgroups) or '-'}",
                f"processes killed: {len(self.processes)}",
            ]
        if self.left_alone:
            out.append(f"unmarked podlab-* namespaces left alone: {', '.join(self.left_alone)}")
        return out


def live_labs() -> dict[str, Ledger]:
    """Labs that are up (or being built) right now, by name."""
    live = {}
    for name, paths in state.known_labs().items():
        try:
            ledger = Ledger.load(paths)
        except UserError:
            continue
        holders = any(sysns.alive(n.pid, n.start) for n in ledger.nodes.values() if n.pid)
        if netns.is_building(ledger) or (ledger.status == "up" and holders):
            live[name] = ledger
    return live


def cleanup() -> CleanupReport:
    """Remove every stale lab object; never touch a live lab or an unmarked object."""
    report = CleanupReport()
    live = live_labs()
    for name, paths in state.known_labs().items():
        if name in live:
            continue
        try:
            with state.lab_lock(name, wait=0):
                down = _down_stale(name, paths)
        except LabError:
            continue  # an up or down of this lab is running right now: not stale
        if down is not None:
            report.labs.append(name)
            report.processes += down.processes
            report.problems += down.problems
    live_tags = {naming.lab_tag(name) for name in live}
    live_netns = {n for ledger in live.values() for n in ledger.netns_names}
    _stale_netns(report, live_tags, live_netns)
    with IPRoute() as ipr:
        for tag, ifnames in links.marked_links(ipr).items():
            if tag in live_tags:
                continue
            for ifname in ifnames:
                index = ipr.link_lookup(ifname=ifname)
                if index:
                    ipr.link("del", index=index[0])
                    report.links.append(ifname)
    for name in cgroup.stale_labs():
        if name not in live:
            cgroup.kill_lab(name)
            report.cgroups.append(name)
    return report


def _down_stale(name: str, paths: state.LabPaths) -> teardown.DownReport | None:
    try:
        ledger = Ledger.load(paths)
    except UserError:
        state.unregister(name, paths)
        teardown.remove_lab_dir(paths)
        return None
    return teardown.down(ledger, paths)


def _stale_netns(report: CleanupReport, live_tags: set[str], live_netns: set[str]) -> None:
    if not sysns.NETNS_DIR.is_dir():
        return
    for entry in sorted(sysns.NETNS_DIR.iterdir()):
        name = entry.name
        if not name.startswith(naming.PREFIX + "-") or name in live_netns:
            continue
        if _dead_probe(name):  # a preflight whose process died before its finally
            teardown.remove_netns(name, report.netns, report.problems)
            continue
        tag = links.netns_tag(name)
        if tag is None:
            report.left_alone.append(name)
            continue
        if tag in live_tags:
            continue
        inode = sysns.ns_inode(entry)
        if inode:
            report.processes += sysns.kill_where({inode}, set(), skip=set())
        teardown.remove_netns(name, report.netns, report.problems)


def _dead_probe(name: str) -> bool:
    """``podlab-preflight-<pid>`` of a pid that no longer runs."""
    prefix, _, pid = name.rpartition("-")
    return prefix == preflight.PROBE_PREFIX and pid.isdigit() and not sysns.alive(int(pid), None)
