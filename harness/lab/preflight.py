"""What this machine can do for a lab and its datapath modes, probed at run time.

Kernel features are tested by creating the link in a throwaway namespace
(``podlab-preflight-<pid>``), never by reading module lists: a module may be
built in, or loadable on demand, or missing. Tools are looked up on PATH (and
sbin). The result is data (``PreflightReport.features()``) so later modes can
fall back (kernel WireGuard → wireguard-go, ipip → userspace) or skip with a
reason, and ``up`` refuses early when something it needs is missing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from harness.errors import Problem, ToolError, UserError
from harness.exec import run
from harness.lab import cgroup, links, sysns

# link kind -> (extra attributes for a minimal instance, required by the netns backend)
KERNEL_LINKS: dict[str, tuple[dict[str, Any], bool]] = {
    "veth": ({"peer": {"ifname": "pfpeer"}}, True),
    "bridge": ({}, True),
    "dummy": ({}, False),
    "vxlan": ({"vxlan_id": 42, "vxlan_port": 4789}, False),
    "macvlan": ({"macvlan_mode": "bridge"}, False),  # parent: a probe veth (see below)
    "ipip": ({}, False),
    "gre": ({}, False),
    "geneve": ({"geneve_id": 42, "geneve_remote": "192.0.2.1"}, False),
    "wireguard": ({}, False),
}
# tool -> (what needs it, required by the netns backend)
TOOLS: dict[str, tuple[str, bool]] = {
    "sshd": ("node management access", True),
    "ssh-keygen": ("lab keys", True),
    "ssh": ("podlab ssh, Ansible", False),
    "nsenter": ("debugging nodes", False),
    "nft": ("service proxy, policy (nftables)", False),
    "iptables": ("iptables proxy mode", False),
    "bird": ("Calico-style bgp modes", False),
    "birdc": ("Calico-style bgp modes", False),
    "etcd": ("cluster store (control-plane nodes)", False),
    "etcdctl": ("debugging etcd", False),
    "iperf3": ("throughput probes", False),
    "wg": ("WireGuard encryption", False),
    "wireguard-go": ("WireGuard without the kernel module", False),
    "tcpdump": ("captures", False),
    "ping": ("reachability probes", False),
    "ipvsadm": ("proxy mode ipvs", False),
    "qemu-system-x86_64": ("VM labs (podlab up --backend vm)", False),
    "qemu-img": ("VM labs: guest disk overlays", False),
    "debootstrap": ("VM labs: building the guest image", False),
}
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
PROBE_PREFIX = "podlab-preflight"  # + "-<pid>": the throwaway probe namespace


@dataclass(frozen=True)
class Check:
    """One probed capability."""

    name: str
    kind: str  # kernel | tool | system
    ok: bool
    detail: str = ""
    required: bool = False


@dataclass
class PreflightReport:
    """All checks, plus the derived choices later stages read."""

    checks: list[Check] = field(default_factory=list)

    def ok(self, name: str) -> bool:
        return any(c.ok for c in self.checks if c.name == name)

    def features(self) -> dict[str, str | bool]:
        """Stable keys: kernel features, implementation choices, tools."""
        feats: dict[str, str | bool] = {c.name: c.ok for c in self.checks}
        feats["wireguard_impl"] = (
            "kernel"
            if self.ok("wireguard")
            else ("wireguard-go" if self.ok("wireguard-go") and self.ok("tun") else "none")
        )
        feats["ipip_impl"] = "kernel" if self.ok("ipip") else "userspace"
        feats["vm_accel"] = "kvm" if self.ok("kvm") else "tcg"
        return feats

    def as_dict(self) -> dict[str, Any]:
        return {"checks": [asdict(c) for c in self.checks], "features": self.features()}


def as_problem(check: Check) -> Problem:
    """A missing requirement as a user-facing problem with a hint."""
    hint = "install openssh-server" if check.name in ("sshd", "ssh-keygen") else "see README"
    return Problem("", f"preflight {check.name}", f"missing ({check.detail})", hint)


def preflight(quick: bool = False) -> PreflightReport:
    """Probe the machine. ``quick`` checks only what ``up`` itself needs (tools)."""
    report = PreflightReport()
    for tool, (why, required) in TOOLS.items():
        if quick and not required:
            continue
        found = which(tool)
        report.checks.append(Check(tool, "tool", found is not None, found or why, required))
    if quick:
        return report
    report.checks += kernel_links()
    report.checks += system_checks()
    return report


def which(tool: str) -> str | None:
    path = os.environ.get("PATH", "") + ":" + SBIN
    return shutil.which(tool, path=path)


def kernel_links() -> list[Check]:
    """Try each link kind in a throwaway netns; the namespace is always removed."""
    name = f"{PROBE_PREFIX}-{os.getpid()}"
    checks = []
    sysns.create_netns(name)
    try:
        with links.socket_in(name) as ipr:
            parent = _probe_parent(ipr)
            for kind, (extra, required) in KERNEL_LINKS.items():
                ifname = f"pf{kind}"[:15]
                if kind == "macvlan":
                    extra = {**extra, "link": parent}
                try:
                    ipr.link("add", ifname=ifname, kind=kind, **extra)
                    ipr.link("del", index=ipr.link_lookup(ifname=ifname)[0])
                    checks.append(Check(kind, "kernel", True, "link created", required))
                except (NetlinkError, OSError, IndexError) as exc:
                    checks.append(Check(kind, "kernel", False, _why(exc), required))
        checks.append(_nft_check(name))
        checks.append(_ipvs_check(name))
    finally:
        sysns.remove_netns(name)
    return checks


def _probe_parent(ipr: Any) -> int:
    """A veth to hang macvlan on (loopback cannot be a macvlan parent); 1 if none."""
    try:
        ipr.link("add", ifname="pfparent", kind="veth", peer={"ifname": "pfparent2"})
        return int(ipr.link_lookup(ifname="pfparent")[0])
    except (NetlinkError, IndexError):
        return 1


def _why(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if code == 95:
        return "not supported by this kernel (no module)"
    return str(exc)[:80] or type(exc).__name__


def _nft_check(netns: str) -> Check:
    nft = which("nft")
    if nft is None:
        return Check("nftables", "kernel", False, "nft tool missing")
    try:
        run([nft, "-f", "-"], netns=netns, input="table inet podlab_probe { }\n", timeout=10)
    except ToolError as exc:
        return Check("nftables", "kernel", False, str(exc)[:80])
    return Check("nftables", "kernel", True, "table created in a throwaway netns")


def _ipvs_check(netns: str) -> Check:
    """IPVS answers in a namespace (``ipvsadm -Ln`` loads ip_vs where it exists)."""
    tool = which("ipvsadm")
    if tool is None:
        return Check("ipvs", "kernel", False, "ipvsadm missing (cannot probe)")
    try:
        run([tool, "-Ln"], netns=netns, timeout=10)
    except ToolError as exc:
        tail = (exc.output.strip().splitlines() or ["no IPVS"])[-1]
        return Check("ipvs", "kernel", False, f"no kernel IPVS: {tail[:70]}")
    return Check("ipvs", "kernel", True, "IPVS answered in a throwaway netns")


def ipvs_available() -> Check:
    """Only the IPVS probe (for ``deploy --proxy-mode ipvs`` on a netns lab)."""
    name = f"{PROBE_PREFIX}-{os.getpid()}"
    sysns.create_netns(name)
    try:
        return _ipvs_check(name)
    finally:
        sysns.remove_netns(name)


def ipvs_refusal(detail: str, where: str = "proxy mode ipvs") -> Problem:
    """Why a netns lab cannot use proxy mode ipvs: its nodes run the host's kernel."""
    return Problem(
        "",
        where,
        f"needs kernel IPVS, which the host kernel lacks ({detail}); netns nodes share it",
        "use --proxy-mode nftables or iptables, or a VM lab: podlab up FILE --backend vm",
    )


def vm_checks() -> list[Check]:
    """How VM labs would run here: KVM or emulation (with the consequence)."""
    from harness.lab import vmspec

    why_not = vmspec.kvm_status()
    if why_not is None:
        return [Check("kvm", "system", True, "VM labs run guests under KVM")]
    return [
        Check(
            "kvm",
            "system",
            False,
            f"{why_not}; VM labs run guests EMULATED (TCG): functional checks only, figures "
            "marked emulated and never compared with native ones",
        )
    ]


def system_checks() -> list[Check]:
    tun = Path("/dev/net/tun")
    try:
        fd = os.open(tun, os.O_RDWR)
        os.close(fd)
        tun_ok, tun_detail = True, str(tun)
    except OSError as exc:
        tun_ok, tun_detail = False, f"{tun}: {exc.strerror}"
    cg = cgroup.cgroup2_root()
    return [
        Check("tun", "kernel", tun_ok, tun_detail),
        Check("cgroup2", "system", cg is not None, str(cg or "not mounted: down scans /proc")),
        Check("root", "system", os.geteuid() == 0, "namespaces need root", True),
        *vm_checks(),
    ]


# What each cluster setting needs, as (feature, what to say when it is missing).
MODE_NEEDS: dict[str, list[tuple[str, str]]] = {
    "vxlan": [("vxlan", "vxlan mode needs the kernel vxlan module")],
    "calico-vxlan": [("vxlan", "calico-vxlan mode needs the kernel vxlan module")],
    "cross-subnet": [
        ("vxlan", "cross-subnet mode needs the kernel vxlan module"),
        ("bird", "cross-subnet mode needs BIRD 2 (bird)"),
    ],
    "udp": [("tun", "udp mode needs /dev/net/tun")],
    "bgp": [("bird", "bgp mode needs BIRD 2 (bird)")],
    "ipip": [("bird", "ipip mode needs BIRD 2 (bird)")],
}


def refuse_ipvs(report: PreflightReport, proxies: set[str]) -> None:
    """A netns lab asking for proxy mode ipvs on a host kernel without IPVS: refused."""
    check = next((c for c in report.checks if c.name == "ipvs"), None)
    if "ipvs" in proxies and check is not None and not check.ok:
        raise UserError([ipvs_refusal(check.detail, "podlab.proxy-mode ipvs")])


def plan_notes(report: PreflightReport, modes: set[str], encryptions: set[str]) -> list[str]:
    """One line per thing a lab's clusters will need and this machine lacks or replaces."""
    feats = report.features()
    notes = [
        f"preflight: {why}"
        for mode in sorted(modes)
        for feature, why in MODE_NEEDS.get(mode, [])
        if not feats.get(feature)
    ]
    if "ipip" in modes and feats["ipip_impl"] != "kernel":
        notes.append("preflight: no kernel ipip module; the agent uses its userspace fallback")
    if "wireguard" in encryptions and feats["wireguard_impl"] != "kernel":
        impl = feats["wireguard_impl"]
        notes.append(f"preflight: no kernel WireGuard; encryption uses {impl}")
    return notes
