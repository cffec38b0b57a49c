"""What the vm backend needs to decide before it builds anything (pure-ish, no lab).

Per-node guest sizes from labels, whether KVM is usable here or qemu must
emulate (TCG), and whether the machine has the memory for the guests asked
for. Every refusal is a located one-line ``UserError``: ``up`` calls these
before it creates a single object, so a refused lab leaves nothing behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import Problem, UserError
from harness.lab import preflight
from harness.plan.model import LabPlan, NodePlan

DEFAULT_MEMORY_MB = 256
# A control-plane guest runs etcd, the agent and the controller manager beside
# systemd, and every deploy check starts one more Python: together more than the
# ~203 MB a 256 MiB guest has. Without swap the kernel then evicts the programs'
# own code pages and, under emulation, the guest crawls (docs/vm-backend.md).
CONTROL_PLANE_MEMORY_MB = 512
DEFAULT_CPUS = 1
MIN_MEMORY_MB = 160  # below this Debian's kernel + systemd + sshd do not boot
TB_SIZE_MB = 64  # TCG translation cache: qemu's 1 GiB default costs ~1 GB RSS per guest
QEMU_OVERHEAD_MB = 40  # qemu's own RSS besides guest RAM and the TCG cache
HOST_RESERVE_MB = 1024  # left to the host (podlab, Ansible, other work)
ACCELS = ("auto", "kvm", "tcg")
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}


@dataclass(frozen=True)
class VmSpec:
    """One guest: its node, position (names taps and MACs), size."""

    node: str
    index: int
    memory_mb: int
    cpus: int


@dataclass(frozen=True)
class Accel:
    """How guests run: ``kvm`` or ``tcg`` (emulated), and why."""

    name: str
    reason: str

    @property
    def emulated(self) -> bool:
        return self.name == "tcg"


def specs(plan: LabPlan) -> dict[str, VmSpec]:
    """Every non-bridge node's guest size from ``podlab.vm-memory`` / ``podlab.vm-cpus``.

    Without the label a control-plane guest gets ``CONTROL_PLANE_MEMORY_MB``, any
    other ``DEFAULT_MEMORY_MB``.
    """
    problems: list[Problem] = []
    out: dict[str, VmSpec] = {}
    nodes = [n for n in plan.nodes.values() if n.name not in plan.bridges]
    for index, node in enumerate(nodes):
        mem = _int_label(
            plan, node, "podlab.vm-memory", default_memory_mb(node), MIN_MEMORY_MB, problems
        )
        cpus = _int_label(plan, node, "podlab.vm-cpus", DEFAULT_CPUS, 1, problems)
        out[node.name] = VmSpec(node.name, index, mem, cpus)
    if problems:
        raise UserError(problems)
    return out


def default_memory_mb(node: NodePlan) -> int:
    """Guest RAM of a node without ``podlab.vm-memory``: more for a control plane."""
    return CONTROL_PLANE_MEMORY_MB if node.role == "control-plane" else DEFAULT_MEMORY_MB


def _int_label(
    plan: LabPlan, node: NodePlan, key: str, default: int, lo: int, problems: list[Problem]
) -> int:
    hi = 65536 if "memory" in key else 64
    raw = node.label(key, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        unit = " (MiB)" if "memory" in key else ""
        problems.append(
            Problem(
                plan.source,
                f"topology.nodes.{node.name}.labels.{key}",
                f"{raw!r} is not a whole number from {lo} to {hi}{unit}",
                f'write {key}: "{default}"',
            )
        )
    return value


def accel_wanted(plan: LabPlan) -> str:
    """``podlab.vm-accel`` (one value for the lab: auto | kvm | tcg), default auto."""
    found = {n.label("podlab.vm-accel", "auto") for n in plan.nodes.values()}
    bad = sorted(found - set(ACCELS))
    if bad or len(found) > 1:
        raise UserError(
            [
                Problem(
                    plan.source,
                    "labels podlab.vm-accel",
                    f"{', '.join(sorted(found))}: one of auto, kvm, tcg for the whole lab",
                    "set podlab.vm-accel once, in topology.defaults.labels",
                )
            ]
        )
    return found.pop()


def kvm_status(dev: Path = Path("/dev/kvm"), cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """None if KVM can run a stock Debian guest here, else why not (one phrase).

    An openable /dev/kvm is not enough: on a cloud VM without nested
    virtualisation it may be PVM (kvm_pvm), which only runs a PVM-enlightened
    guest kernel; with a stock kernel qemu aborts or crawls 300x slower than
    emulation. Hardware virtualisation shows as ``vmx``/``svm`` in the CPU flags.
    """
    if not dev.exists():
        return "no /dev/kvm"
    try:
        fd = os.open(dev, os.O_RDWR)
        os.close(fd)
    except OSError as exc:
        return f"/dev/kvm not usable: {exc.strerror}"
    flags = set()
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        return "cannot read /proc/cpuinfo"
    if not flags & {"vmx", "svm"}:
        pvm = Path("/sys/module/kvm_pvm").exists()
        what = "is PVM (kvm_pvm)" if pvm else "has no vmx/svm CPU flag"
        return f"/dev/kvm {what}: a stock guest kernel cannot use it"
    return None


def choose_accel(plan: LabPlan) -> Accel:
    """KVM where it works, TCG where not; ``podlab.vm-accel: kvm`` refuses TCG."""
    wanted = accel_wanted(plan)
    why_not = kvm_status()
    if wanted == "tcg":
        return Accel("tcg", "asked for (podlab.vm-accel: tcg)")
    if why_not is None:
        return Accel("kvm", "hardware virtualisation")
    if wanted == "kvm":
        raise UserError(
            [
                Problem(
                    plan.source,
                    "labels podlab.vm-accel",
                    f"kvm asked for, but {why_not}",
                    "use podlab.vm-accel: auto (emulation, slow) or run on a machine with KVM",
                )
            ]
        )
    return Accel("tcg", f"emulated: {why_not}")


def guest_host_mb(spec: VmSpec, accel: Accel) -> int:
    """Host memory one guest may take: its RAM, qemu itself, the TCG cache."""
    return spec.memory_mb + QEMU_OVERHEAD_MB + (TB_SIZE_MB if accel.emulated else 0)


def mem_available_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def check_memory(plan: LabPlan, vms: dict[str, VmSpec], accel: Accel, available: int) -> None:
    """Refuse a lab whose guests would not fit in the host's available memory."""
    need = sum(guest_host_mb(s, accel) for s in vms.values())
    room = available - HOST_RESERVE_MB
    if need > room:
        raise UserError(
            [
                Problem(
                    plan.source,
                    f"lab {plan.name}",
                    f"{len(vms)} guests need {need} MiB of host memory, {max(room, 0)} MiB "
                    f"is available (MemAvailable {available} MiB less {HOST_RESERVE_MB} kept)",
                    "lower podlab.vm-memory, use fewer nodes, or take other labs down",
                )
            ]
        )


def check_tools() -> None:
    """Refuse early when qemu or the image tools are missing."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if preflight.which(tool) is None})
    if missing:
        raise UserError(
            [
                Problem(
                    "",
                    "preflight vm",
                    f"missing packages: {', '.join(missing)}",
                    "run `make setup` (it installs them)",
                )
            ]
        )
