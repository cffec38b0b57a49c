"""The netns backend: a LabPlan becomes namespaces, veths, bridges and sshds.

``up`` is a flat list of phases (holders, bridges, management, segments,
addresses and routes, sshd, client files, inventory). The ledger records each
object before it is made; any failure rolls the lab back through ``down``.
Kernel objects per lab (names from ``harness.plan.naming``):

- per node: a holder process ``podlab-init <lab>/<node>`` owning net+mnt+uts
  namespaces, pinned as ``/run/netns/podlab-<lab>-<node>``, in cgroup
  ``podlab/<lab>/<node>``; ``eth0`` (management) and ``eth1…`` (underlay);
  an sshd on the management address.
- per ``kind: bridge`` segment: netns ``podlab-<lab>-<bridge>`` with bridge
  ``br0`` and one port per member; p2p segments are a direct veth pair.
- root netns: bridge ``plm-<tag>`` with the host's management gateway address,
  one ``pl<tag>m<i>`` veth per node — all carrying altname ``podlab-<tag>-…``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute

from harness.errors import LabError, UserError
from harness.lab import (
    cgroup,
    links,
    nodeexec,
    nodeinit,
    preflight,
    sshd,
    state,
    sysns,
    teardown,
)
from harness.lab.backend import NodeRow, UpRequest, UpResult
from harness.lab.state import LabPaths, Ledger, NodeState
from harness.plan import naming
from harness.plan.model import LabPlan, NodePlan

PHASES = ("keys", "nodes", "bridges", "mgmt", "segments", "addresses", "sshd", "files", "exec")


class NetnsBackend:
    """Build labs out of Linux namespaces on this machine."""

    name = "netns"

    def up(self, request: UpRequest) -> UpResult:
        if request.plan is None:
            raise UserError("the netns backend needs a topology file")
        return up(request.plan, request)

    def down(self, lab: str) -> teardown.DownReport:
        return down(lab)


def rows(plan: LabPlan, state: str = "up") -> list[NodeRow]:
    """Summary-table rows of a plan."""
    return [
        NodeRow(
            node=n.shown,
            role=n.role,
            cluster=n.cluster or "-",
            mgmt=str(n.mgmt.ip),
            underlay=underlay_text(n) or "-",
            state=state,
        )
        for n in plan.nodes.values()
        if n.name not in plan.bridges
    ]


def underlay_text(node: NodePlan) -> str:
    """The underlay column: its address, or the interface alone when unaddressed."""
    u = node.underlay
    if u is None:
        return ""
    if u.address:
        return str(u.address)
    return f"{u.name} (exec: sets it)" if node.exec else f"{u.name} (no address)"


def up(plan: LabPlan, request: UpRequest) -> UpResult:
    """Build ``plan``; idempotent for the same plan, refused for a different one."""
    with state.lab_lock(plan.name):
        return _up(plan, request)


def _up(plan: LabPlan, request: UpRequest) -> UpResult:
    existing = state.registered(plan.name)
    if existing and existing.state.exists() and existing.root.parent != state.podlab_home():
        raise UserError(
            f"lab {plan.name} is already up from another project ({existing.root}); lab "
            f"names are machine-wide: run `podlab down {plan.name}` first, or rename the lab"
        )
    paths = existing if existing and existing.state.exists() else LabPaths.of(plan.name)
    result = UpResult(lab=plan.name, backend="netns", rows=rows(plan))
    if paths.state.exists():
        ledger = Ledger.load(paths)
        if ledger.digest != plan.digest:
            raise UserError(
                f"lab {plan.name} is already up from {ledger.source} with a different "
                f"topology (digest {ledger.digest[:12]} != {plan.digest[:12]}); "
                f"run `podlab down {plan.name}` first, or rename the lab"
            )
        if ledger.status == "up" and _resume(plan, paths, ledger, result):
            return result
        if is_building(ledger):
            raise LabError(f"lab {plan.name} is being built by pid {ledger.owner_pid}")
        result.notes.append(f"lab {plan.name}: removed the remains of an interrupted up")
        teardown.down(ledger, paths)
        paths = LabPaths.of(plan.name)
    with IPRoute() as ipr:
        links.check_mgmt_free(ipr, plan.name, plan.mgmt_subnet)
    checks = preflight.preflight()
    missing = [c for c in checks.checks if c.required and not c.ok]
    if missing:
        raise UserError([preflight.as_problem(c) for c in missing])
    preflight.refuse_ipvs(checks, {c.proxy_mode for c in plan.clusters.values()})
    modes = {c.mode for c in plan.clusters.values()}
    result.notes += preflight.plan_notes(
        checks, modes, {c.encryption for c in plan.clusters.values()}
    )
    paths.root.mkdir(parents=True, exist_ok=True)
    (paths.root / "preflight.json").write_text(json.dumps(checks.as_dict(), indent=1))
    paths.marker.write_text(f"podlab lab {plan.name}\n")
    state.register(plan.name, paths)
    ledger = Ledger(
        lab=plan.name,
        source=str(Path(plan.source).resolve()) if Path(plan.source).is_file() else plan.source,
        digest=plan.digest,
        status="building",
        mgmt_bridge=naming.mgmt_bridge(plan.name),
        mgmt_subnet=str(plan.mgmt_subnet),
        owner_pid=os.getpid(),
        owner_start=sysns.start_time(os.getpid()),
    )
    ledger.save(paths)
    try:
        _build(plan, paths, ledger, request)
        ledger.status = "up"
        ledger.owner_pid = ledger.owner_start = None
        ledger.save(paths)
        result.inventory = _inventory(plan, paths)
        ledger.inventory = str(result.inventory)
        ledger.save(paths)
    except BaseException:
        if request.fault and request.fault.startswith("crash:"):
            os._exit(3)  # tests: die like a SIGKILL'd `up` (no rollback, no cleanup)
        teardown.down(ledger, paths)
        raise
    return result


def _resume(plan: LabPlan, paths: LabPaths, ledger: Ledger, result: UpResult) -> bool:
    """An ``up`` lab asked up again: nothing to do, or restart dead sshds.

    Returns False when every node is gone (after a reboot, say): the remains are
    then removed and the lab rebuilt. Refuses when only some nodes died, since
    rebuilding would silently discard what was deployed on the others.
    """
    dead = [name for name, n in ledger.nodes.items() if not sysns.alive(n.pid or 0, n.start)]
    if dead and len(dead) == len(ledger.nodes):
        return False
    result.already_up = True
    result.inventory = _inventory(plan, paths)  # cheap, and repairs a deleted file
    if dead:
        raise UserError(
            f"lab {plan.name} is up but nodes {', '.join(dead)} are gone; "
            f"run `podlab down {plan.name}` and `podlab up` again"
        )
    restart = {
        name: (n.pid or 0, n.mgmt.split("/")[0], cgroup.node_procs(plan.name, name))
        for name, n in ledger.nodes.items()
        if not (n.sshd_pid and sysns.alive(n.sshd_pid, n.sshd_start))
    }
    if restart:
        for name, (pid, start) in sshd.start_all(paths, restart).items():
            ledger.nodes[name].sshd_pid, ledger.nodes[name].sshd_start = pid, start
        ledger.save(paths)
        result.notes.append(f"lab {plan.name} is up; restarted sshd on {', '.join(restart)}")
    else:
        result.notes.append(f"lab {plan.name} is already up; nothing changed")
    return True


def is_building(ledger: Ledger) -> bool:
    """True while the ``podlab up`` that owns a building ledger is still running."""
    return (
        ledger.status == "building"
        and ledger.owner_pid is not None
        and ledger.owner_pid != os.getpid()
        and sysns.alive(ledger.owner_pid, ledger.owner_start)
    )


def _build(plan: LabPlan, paths: LabPaths, ledger: Ledger, request: UpRequest) -> None:
    """Every phase in order; raises on the first failure."""
    nodes = [n for n in plan.nodes.values() if n.name not in plan.bridges]

    def step(phase: str) -> None:
        request.progress(phase, PHASES.index(phase) + 1, len(PHASES))
        if (request.fault or "").removeprefix("crash:") == phase:
            raise LabError(f"injected failure after phase {phase}")

    sshd.ensure_keys(paths, plan.name)
    nodeinit.ensure_mountpoints()
    step("keys")
    _spawn_nodes(plan, nodes, paths, ledger)
    step("nodes")
    for seg in plan.segments.values():
        if seg.kind == "bridge":
            name = naming.netns_name(plan.name, seg.name)
            ledger.bridge_netns[name] = None
            ledger.mounts.append(str(sysns.netns_path(name)))
            ledger.save(paths)
            ledger.bridge_netns[name] = sysns.create_netns(name)
            links.mark_netns(name, plan.name)
    ledger.save(paths)
    step("bridges")
    with IPRoute() as ipr:
        ledger.root_links.append(ledger.mgmt_bridge)
        ledger.root_links += [n.host_veth for n in ledger.nodes.values()]
        ledger.save(paths)
        bridge = links.create_mgmt_bridge(ipr, plan.name, plan.mgmt_gateway)
        for n in ledger.nodes.values():
            links.add_mgmt_veth(ipr, plan.name, n.host_veth, n.netns, bridge)
        step("mgmt")
        _segments(ipr, plan)
    step("segments")
    for node in nodes:
        links.configure_node(ledger.nodes[node.name].netns, plan.name, node)
    step("addresses")
    _start_sshds(plan, paths, ledger)
    step("sshd")
    sshd.write_client_files(paths, {n.name: str(n.mgmt.ip) for n in nodes})
    step("files")
    nodeexec.run_all(plan, paths.root / "exec", lambda node: _enter(plan, ledger, node))
    step("exec")


def _enter(plan: LabPlan, ledger: Ledger, node: NodePlan) -> Callable[[list[str]], list[str]]:
    """How an exec command gets into the node: its namespaces and cgroup."""
    pid = ledger.nodes[node.name].pid or 0
    return nodeexec.in_netns_node(pid, cgroup.node_procs(plan.name, node.name))


def _spawn_nodes(plan: LabPlan, nodes: list[NodePlan], paths: LabPaths, ledger: Ledger) -> None:
    """Every node's holder (all forked at once), then its /run/netns handle and marker."""
    for index, node in enumerate(nodes):
        ledger.nodes[node.name] = NodeState(
            netns=naming.netns_name(plan.name, node.name),
            mgmt=str(node.mgmt),
            host_veth=naming.mgmt_host_veth(plan.name, index),
            role=node.role,
            cluster=node.cluster or "",
            underlay=underlay_text(node),
            clab_name=node.clab_name or "",
        )
    ledger.cgroup = str(cgroup.lab_cgroup(plan.name) or "") or None
    ledger.save(paths)
    pending = []
    for node in nodes:  # children join the lab cgroup first: down finds them even now
        procs = cgroup.create_node_cgroup(plan.name, node.name)
        pending.append(
            nodeinit.start_node(plan.name, node.name, paths.node_dir(node.name), procs, node.binds)
        )
    failures = []
    for job in pending:
        try:
            holder = nodeinit.finish_node(job)
        except LabError as exc:
            failures.append(str(exc))
            continue
        nstate = ledger.nodes[job.node]
        nstate.pid, nstate.start = holder.pid, holder.start
        nstate.net_inode, nstate.mnt_inode = holder.net, holder.mnt
    ledger.save(paths)
    if failures:
        raise LabError("; ".join(failures))
    # Handles only now: a holder born after them would copy them into its mount ns.
    for nstate in ledger.nodes.values():
        ledger.mounts.append(str(sysns.netns_path(nstate.netns)))
        sysns.bind_netns(nstate.netns, f"/proc/{nstate.pid}/ns/net")
        links.mark_netns(nstate.netns, plan.name)
    ledger.save(paths)


def _start_sshds(plan: LabPlan, paths: LabPaths, ledger: Ledger) -> None:
    wanted = {
        name: (n.pid or 0, n.mgmt.split("/")[0], cgroup.node_procs(plan.name, name))
        for name, n in ledger.nodes.items()
    }
    for name, (pid, start) in sshd.start_all(paths, wanted).items():
        ledger.nodes[name].sshd_pid, ledger.nodes[name].sshd_start = pid, start
    ledger.save(paths)


def _segments(ipr: IPRoute, plan: LabPlan) -> None:
    """Underlay links: veth pairs for p2p segments, bridge ports for bridge segments."""
    for seg in plan.segments.values():
        members = [(node, ifname) for node, ifname in seg.members if node in plan.nodes]
        if seg.kind == "bridge":
            br_ns = naming.netns_name(plan.name, seg.name)
            ports = []
            for index, (node, ifname) in enumerate(members):
                port = f"p{index}"
                node_ns = naming.netns_name(plan.name, node)
                links.add_veth(ipr, (node_ns, ifname), (br_ns, port), seg.mtu)
                ports.append(port)
            links.build_segment_bridge(br_ns, plan.name, seg.mtu, ports)
        elif len(members) == 2:
            (na, ia), (nb, ib) = members
            links.add_veth(
                ipr,
                (naming.netns_name(plan.name, na), ia),
                (naming.netns_name(plan.name, nb), ib),
                seg.mtu,
            )
        else:
            raise LabError(f"segment {seg.name}: p2p link needs 2 node endpoints, has {members}")


def _inventory(plan: LabPlan, paths: LabPaths) -> Path:
    """Write ``inventories/<lab>.yml`` under the project home via the inventory stage."""
    from harness.inventory import project_home, write_inventory

    return write_inventory(plan, paths.root, project_home())


def is_alive(ledger: Ledger) -> bool:
    """True if every node holder and sshd recorded in the ledger still runs."""
    return all(
        sysns.alive(n.pid, n.start)
        and (n.is_vm or (n.sshd_pid and sysns.alive(n.sshd_pid, n.sshd_start)))
        for n in ledger.nodes.values()
        if n.pid
    ) and bool(ledger.nodes)


def down(lab: str) -> teardown.DownReport:
    """Take lab ``lab`` down from its ledger (found through the registry from anywhere)."""
    with state.lab_lock(lab):
        return _down(lab)


def _down(lab: str) -> teardown.DownReport:
    paths = state.find(lab)
    if not paths.state.exists():
        state.unregister(lab, paths)
        if paths.marker.exists():
            teardown.remove_lab_dir(paths)
            return teardown.DownReport(lab)
        raise UserError(f"no lab named {lab} (see `podlab status`)")
    return teardown.down(Ledger.load(paths), paths)
