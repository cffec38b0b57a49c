"""The vm backend: every lab node a qemu guest, every link a tap on a bridge.

``podlab up FILE --backend vm`` builds the same lab as the netns backend —
same addresses, routes, management network, inventory and ssh access — out
of virtual machines, so the deploy's systemd path and the kernel-only
features (kernel WireGuard, IPIP, IPVS) run for real. Objects per lab:

- netns ``podlab-<lab>--vm``: bridge ``brm`` (management), one bridge
  ``bs<i>`` per underlay segment, one persistent tap ``t<node>n<nic>`` per
  guest NIC, and every qemu process (in cgroup ``podlab/<lab>/<node>``);
- root netns: one veth ``plm-<tag>`` holding the host's management gateway
  address, its peer ``mgmt`` a port of ``brm`` (no bridge, tap, forwarding or
  NAT in the root namespace);
- ``.podlab/<lab>/nodes/<node>/``: the node's qcow2 overlay on the cached
  base image, its identity document (fw_cfg) and its serial console log.

The guest image is shared and never written (see ``harness.lab.image``). KVM
where it works, TCG emulation elsewhere (``vmspec.choose_accel``); the ledger,
``status`` and the inventory record which. ``down`` is the netns backend's
teardown: the ledger lists the qemu pids, the namespace and the veth.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute

from harness.errors import LabError, ToolError, UserError
from harness.exec import run
from harness.lab import cgroup, links, netns, nodeexec, sshd, state, sysns, teardown, vmspec
from harness.lab.backend import UpRequest, UpResult
from harness.lab.image import build as image_build
from harness.lab.state import LabPaths, Ledger, NodeState
from harness.lab.vmspec import Accel, VmSpec
from harness.plan import naming
from harness.plan.model import LabPlan, NodePlan

PHASES = ("image", "network", "disks", "boot", "ssh", "files", "exec")
MGMT_BRIDGE = "brm"
MGMT_PEER = "mgmt"
# A boot is judged by the CPU time its qemu used, not by the wall clock: on a
# loaded machine an emulated guest gets a fraction of a core and boots slowly but
# surely (a TCG boot needs ~80 CPU-s here). It fails when it burnt this much CPU
# without sshd answering (stuck), or at the wall-clock cap (starved).
BOOT_CPU_KVM_S = 60.0
BOOT_CPU_TCG_S = 400.0
BOOT_WALL_CAP_S = 1800.0


class VmBackend:
    """Build labs out of qemu guests on this machine."""

    name = "vm"

    def up(self, request: UpRequest) -> UpResult:
        if request.plan is None:
            raise UserError("the vm backend needs a topology file")
        with state.lab_lock(request.plan.name, wait=600):
            return _up(request.plan, request)

    def down(self, lab: str) -> teardown.DownReport:
        return netns.down(lab)


def _up(plan: LabPlan, request: UpRequest) -> UpResult:
    existing = state.registered(plan.name)
    paths = existing if existing and existing.state.exists() else LabPaths.of(plan.name)
    result = UpResult(lab=plan.name, backend="vm", rows=netns.rows(plan, "up"))
    if paths.state.exists():
        ledger = Ledger.load(paths)
        if ledger.backend != "vm" or ledger.digest != plan.digest:
            raise UserError(
                f"lab {plan.name} is already up ({ledger.backend} backend, digest "
                f"{ledger.digest[:12]}); run `podlab down {plan.name}` first, or rename the lab"
            )
        if netns.is_building(ledger):
            raise LabError(f"lab {plan.name} is being built by pid {ledger.owner_pid}")
        if ledger.status == "up" and _resume(plan, paths, ledger, result):
            return result
        result.notes.append(f"lab {plan.name}: removed the remains of an earlier up")
        teardown.down(ledger, paths)
        paths = LabPaths.of(plan.name)
    vms, accel = _checks(plan)
    request.progress("image", 1, len(PHASES))
    image, built = image_build.ensure(log=lambda msg: request.progress(msg, 1, len(PHASES)))
    if built:
        result.notes.append(f"built guest image {image.key} in {image.info()['build_s']} s")
    result.notes.append(f"guests run under {accel.name.upper()} ({accel.reason})")
    ledger = _new_ledger(plan, paths, image.key)
    try:
        _build(plan, paths, ledger, request, vms, accel, image)
        ledger.status = "up"
        ledger.owner_pid = ledger.owner_start = None
        ledger.save(paths)
        result.inventory = _inventory(plan, paths)
        ledger.inventory = str(result.inventory)
        ledger.save(paths)
    except BaseException:
        teardown.down(ledger, paths)
        raise
    return result


def _checks(plan: LabPlan) -> tuple[dict[str, VmSpec], Accel]:
    """Everything that can refuse the lab, before anything exists."""
    with_binds = [n.clab_name or n.name for n in plan.nodes.values() if n.binds]
    if with_binds:
        raise UserError(
            f"{plan.source}: nodes {', '.join(with_binds)}: binds are not supported on the "
            "vm backend (a guest has its own filesystem) (fix: remove binds, or use "
            "--backend netns)"
        )
    vmspec.check_tools()
    vms = vmspec.specs(plan)
    accel = vmspec.choose_accel(plan)
    vmspec.check_memory(plan, vms, accel, vmspec.mem_available_mb())
    if not Path("/dev/net/tun").exists():
        raise UserError("preflight vm: /dev/net/tun missing (fix: modprobe tun)")
    with IPRoute() as ipr:
        links.check_mgmt_free(ipr, plan.name, plan.mgmt_subnet)
    return vms, accel


def _new_ledger(plan: LabPlan, paths: LabPaths, image_key: str) -> Ledger:
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.marker.write_text(f"podlab lab {plan.name}\n")
    state.register(plan.name, paths)
    source = Path(plan.source)
    ledger = Ledger(
        lab=plan.name,
        source=str(source.resolve()) if source.is_file() else plan.source,
        digest=plan.digest,
        status="building",
        mgmt_bridge=naming.mgmt_bridge(plan.name),
        mgmt_subnet=str(plan.mgmt_subnet),
        owner_pid=os.getpid(),
        owner_start=sysns.start_time(os.getpid()),
        backend="vm",
        image=image_key,
    )
    ledger.save(paths)
    return ledger


def _resume(plan: LabPlan, paths: LabPaths, ledger: Ledger, result: UpResult) -> bool:
    """Up again: nothing to do while every guest runs; False when all are gone."""
    dead = [name for name, n in ledger.nodes.items() if not sysns.alive(n.pid or 0, n.start)]
    if dead and len(dead) == len(ledger.nodes):
        return False
    if dead:
        raise UserError(
            f"lab {plan.name} is up but guests {', '.join(dead)} are gone; "
            f"run `podlab down {plan.name}` and `podlab up` again"
        )
    result.already_up = True
    result.inventory = _inventory(plan, paths)
    result.notes.append(f"lab {plan.name} is already up; nothing changed")
    return True


def _build(
    plan: LabPlan,
    paths: LabPaths,
    ledger: Ledger,
    request: UpRequest,
    vms: dict[str, VmSpec],
    accel: Accel,
    image: image_build.Image,
) -> None:
    def step(phase: str) -> None:
        request.progress(phase, PHASES.index(phase) + 1, len(PHASES))
        if request.fault == phase:
            raise LabError(f"injected failure after phase {phase}")

    step("image")
    sshd.ensure_keys(paths, plan.name)
    release = str(image.info().get("kernel_release", ""))
    space = naming.vm_netns(plan.name)
    for spec in vms.values():
        node = plan.nodes[spec.node]
        ledger.nodes[node.name] = NodeState(
            netns=space,
            mgmt=str(node.mgmt),
            host_veth=naming.vm_tap(spec.index, 0),
            role=node.role,
            cluster=node.cluster or "",
            underlay=netns.underlay_text(node),
            clab_name=node.clab_name or "",
            vm_accel=accel.name,
            vm_memory_mb=spec.memory_mb,
            vm_cpus=spec.cpus,
            vm_kernel=release,
        )
    ledger.cgroup = str(cgroup.lab_cgroup(plan.name) or "") or None
    _network(plan, ledger, paths, vms)
    step("network")
    for spec in vms.values():
        _overlay(paths, spec, image)
        _identity(plan, paths, plan.nodes[spec.node])
    step("disks")
    for spec in vms.values():
        _start_guest(plan, paths, ledger, spec, accel, image)
    step("boot")
    sshd.write_client_files(paths, {s.node: str(plan.nodes[s.node].mgmt.ip) for s in vms.values()})
    _wait_ssh(plan, paths, ledger, accel)
    step("ssh")
    step("files")
    run_exec(plan, paths)
    step("exec")


def run_exec(plan: LabPlan, paths: LabPaths) -> None:
    """containerlab's ``exec:`` in the guests: the netns backend's runner
    (``nodeexec.run_all``: wait-for and startup-delay order, env, logs, the first
    failure fails ``up``), each command over the lab's ssh (``exec_enter``)."""
    nodeexec.run_all(plan, paths.root / "exec", exec_enter(paths.ssh_config))


def exec_enter(ssh_config: Path) -> Callable[[NodePlan], Callable[[list[str]], list[str]]]:
    """node → argv → the argv running it in that guest (``ssh -F CONFIG node -- CMD``)."""
    return lambda node: nodeexec.over_ssh(ssh_config, node.name)


def _network(plan: LabPlan, ledger: Ledger, paths: LabPaths, vms: dict[str, VmSpec]) -> None:
    """The lab namespace with its bridges and taps, and the root veth into it."""
    space = naming.vm_netns(plan.name)
    ledger.bridge_netns[space] = None
    ledger.mounts.append(str(sysns.netns_path(space)))
    ledger.root_links.append(ledger.mgmt_bridge)
    ledger.save(paths)
    ledger.bridge_netns[space] = sysns.create_netns(space)
    links.mark_netns(space, plan.name)
    ledger.save(paths)
    segments = list(plan.segments)
    with sysns.in_netns(sysns.netns_path(space)):
        Path("/proc/sys/net/ipv6/conf/default/disable_ipv6").write_text("1")
        Path("/proc/sys/net/ipv6/conf/all/disable_ipv6").write_text("1")
        ipr = IPRoute()
        with ipr:
            ipr.link("set", index=1, state="up")
            bridges = {MGMT_BRIDGE: 1500}
            bridges |= {
                naming.vm_segment_bridge(i): plan.segments[s].mtu for i, s in enumerate(segments)
            }
            for name, mtu in bridges.items():
                ipr.link(
                    "add", ifname=name, kind="bridge", mtu=mtu, br_stp_state=0, br_forward_delay=0
                )
                links.mark(ipr, _index(ipr, name), plan.name, name)
                ipr.link("set", index=_index(ipr, name), state="up")
            for spec in vms.values():
                node = plan.nodes[spec.node]
                nics = [(MGMT_BRIDGE, 1500)] + [
                    (naming.vm_segment_bridge(segments.index(i.segment)), i.mtu)
                    for i in node.interfaces
                ]
                for nic, (bridge, mtu) in enumerate(nics):
                    tap = naming.vm_tap(spec.index, nic)
                    ipr.link("add", ifname=tap, kind="tuntap", mode="tap")
                    index = _index(ipr, tap)
                    links.mark(ipr, index, plan.name, tap)
                    ipr.link("set", index=index, mtu=mtu, master=_index(ipr, bridge), state="up")
    with IPRoute() as ipr:
        gw = plan.mgmt_gateway
        ipr.link(
            "add",
            ifname=ledger.mgmt_bridge,
            kind="veth",
            peer={"ifname": MGMT_PEER, "net_ns_fd": space},
        )
        index = _index(ipr, ledger.mgmt_bridge)
        links.mark(ipr, index, plan.name, "mgmt")
        links._no_ipv6(ledger.mgmt_bridge)
        ipr.addr("add", index=index, address=str(gw.ip), prefixlen=gw.network.prefixlen)
        ipr.link("set", index=index, state="up")
    with links.socket_in(space) as ipr:
        peer = _index(ipr, MGMT_PEER)
        links.mark(ipr, peer, plan.name, MGMT_PEER)
        ipr.link("set", index=peer, master=_index(ipr, MGMT_BRIDGE), state="up")


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"interface {ifname} vanished while the lab was being built")
    return int(found[0])


def _overlay(paths: LabPaths, spec: VmSpec, image: image_build.Image) -> None:
    """The node's copy-on-write disk on the shared, never-written base image."""
    node_dir = paths.node_dir(spec.node)
    node_dir.mkdir(parents=True, exist_ok=True)
    disk = node_dir / "disk.qcow2"
    run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(image.disk),
            str(disk),
        ],
        timeout=60,
    )


def identity(plan: LabPlan, node: NodePlan, login_pub: str, host_key: str, host_pub: str) -> dict:  # type: ignore[type-arg]
    """The document ``guest/podlab-identity`` applies at boot: who this guest is."""
    ifaces = [{"name": "eth0", "address": str(node.mgmt), "mtu": 1500, "routes": []}]
    for iface in node.interfaces:
        routes = [
            {"dest": str(r.dest), "via": str(r.via)} for r in node.routes if r.dev == iface.name
        ]
        ifaces.append(
            {
                "name": iface.name,
                # "": networkd's empty Address= (no address): a plain containerlab link
                "address": str(iface.address) if iface.address else "",
                "mtu": iface.mtu,
                "routes": routes,
            }
        )
    return {
        "lab": plan.name,
        "hostname": node.name,
        "authorized_keys": login_pub,
        "host_key": host_key,
        "host_key_pub": host_pub,
        "interfaces": ifaces,
        "sysctls": {
            "net.ipv4.ip_forward": 1 if node.is_router else 0,
            "net.ipv4.conf.all.rp_filter": 0,
            "net.ipv4.conf.default.rp_filter": 0,
            "net.ipv6.conf.all.disable_ipv6": 1,
            "net.ipv6.conf.default.disable_ipv6": 1,
        },
    }


def _identity(plan: LabPlan, paths: LabPaths, node: NodePlan) -> None:
    doc = identity(
        plan,
        node,
        Path(f"{paths.key}.pub").read_text(),
        paths.host_key.read_text(),
        Path(f"{paths.host_key}.pub").read_text(),
    )
    target = paths.node_dir(node.name) / "identity.json"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)


def mac(spec: VmSpec, nic: int) -> str:
    """Deterministic, locally administered (qemu's 52:54:00 prefix) per guest NIC."""
    return f"52:54:00:{(spec.index >> 8) & 0xFF:02x}:{spec.index & 0xFF:02x}:{nic:02x}"


def qemu_argv(
    plan: LabPlan, paths: LabPaths, spec: VmSpec, accel: Accel, image: image_build.Image
) -> list[str]:
    """The qemu command line of one guest (daemonized, pid file in its node dir)."""
    node = plan.nodes[spec.node]
    node_dir = paths.node_dir(spec.node)
    accel_args = (
        ["-accel", f"tcg,thread=single,tb-size={vmspec.TB_SIZE_MB}", "-cpu", "max"]
        if accel.emulated
        else ["-accel", "kvm", "-cpu", "host"]
    )
    argv = [
        "qemu-system-x86_64",
        "-name",
        f"podlab-{plan.name}-{spec.node},process=pl-vm-{spec.node}"[:200],
        "-M",
        "pc",
        *accel_args,
        "-m",
        str(spec.memory_mb),
        "-smp",
        str(spec.cpus),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{node_dir / 'console.log'}",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 quiet "
        "systemd.show_status=0 mitigations=off",
        "-drive",
        f"file={node_dir / 'disk.qcow2'},if=none,id=hd,format=qcow2,cache=unsafe",
        "-device",
        "virtio-blk-pci,drive=hd,addr=0x10",
        "-fw_cfg",
        f"name=opt/podlab/identity,file={node_dir / 'identity.json'}",
        "-pidfile",
        str(node_dir / "qemu.pid"),
        "-daemonize",
    ]
    for nic in range(1 + len(node.interfaces)):
        tap = naming.vm_tap(spec.index, nic)
        argv += [
            "-netdev",
            f"tap,id=n{nic},ifname={tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=n{nic},mac={mac(spec, nic)},addr={0x3 + nic:#x},romfile=",
        ]
    return argv


def _start_guest(
    plan: LabPlan,
    paths: LabPaths,
    ledger: Ledger,
    spec: VmSpec,
    accel: Accel,
    image: image_build.Image,
) -> None:
    """Start one qemu (daemonized in the lab namespace, in the node's cgroup)."""
    procs = cgroup.create_node_cgroup(plan.name, spec.node)
    argv = qemu_argv(plan, paths, spec, accel, image)
    try:
        run(argv, timeout=120, netns=naming.vm_netns(plan.name), cgroup_procs=procs)
    except ToolError as exc:
        raise LabError(f"node {spec.node}: qemu did not start: {exc}") from exc
    pid = int((paths.node_dir(spec.node) / "qemu.pid").read_text().strip())
    node = ledger.nodes[spec.node]
    node.pid, node.start = pid, sysns.start_time(pid)
    node.net_inode = ledger.bridge_netns.get(naming.vm_netns(plan.name))
    ledger.save(paths)


def boot_cpu_budget(accel: Accel) -> float:
    """CPU-seconds a guest's qemu may burn before its sshd answers."""
    return BOOT_CPU_TCG_S if accel.emulated else BOOT_CPU_KVM_S


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included), in seconds."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = sysns.stat_fields(raw)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ssh(plan: LabPlan, paths: LabPaths, ledger: Ledger, accel: Accel) -> None:
    """Until every guest answers ssh; a guest whose qemu exits fails the up at once,
    one that burnt its CPU budget (stuck) or hit the wall-clock cap (starved) too."""
    pending = dict(ledger.nodes)
    started = time.monotonic()
    budget = boot_cpu_budget(accel)
    while pending:
        for name, node in list(pending.items()):
            if not sysns.alive(node.pid or 0, node.start):
                raise LabError(
                    f"node {name}: qemu exited while booting: {console_tail(paths, name)}"
                )
            if _port_open(node.mgmt.split("/")[0]) and _ssh_ok(paths, name):
                del pending[name]
                continue
            used, waited = cpu_seconds(node.pid or 0), time.monotonic() - started
            if used > budget or waited > BOOT_WALL_CAP_S:
                raise LabError(
                    f"guest {name} did not answer ssh after {used:.0f} CPU-s of qemu "
                    f"({accel.name}, budget {budget:.0f}) and {waited:.0f} s; last console "
                    f"line: {console_tail(paths, name)}"
                )
        if pending:
            time.sleep(1.0)


def _port_open(ip: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=1.0):
            return True
    except OSError:
        return False


def _ssh_ok(paths: LabPaths, node: str) -> bool:
    argv = [
        "ssh",
        "-F",
        str(paths.ssh_config),
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        node,
        "true",
    ]
    return run(argv, timeout=60, check=False).returncode == 0


def console_tail(paths: LabPaths, node: str) -> str:
    """The guest's last serial console line (kernel panics and boot failures show here)."""
    try:
        lines = (paths.node_dir(node) / "console.log").read_text(errors="replace").splitlines()
    except OSError:
        return "no console log"
    lines = [ln.strip() for ln in lines if ln.strip()]
    return lines[-1][-160:] if lines else "console empty"


def _inventory(plan: LabPlan, paths: LabPaths) -> Path:
    from harness.inventory import project_home, write_inventory

    return write_inventory(plan, paths.root, project_home(), backend="vm")
