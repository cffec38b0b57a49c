"""Capture the environment a run happened in.

Absolute figures (Gbit/s, milliseconds) mean little without the kernel, the CPU
and the tool versions that produced them, so every results file carries them.
Which fallbacks were in use (userspace IPIP, wireguard-go) is not discoverable
from the host: the run reports them (``capture(fallbacks=...)`` or
``ResultsWriter.note_fallback``).

Each tool version is a command/parse pair; the parsers are pure and tested on
captured output.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from harness.errors import ToolError
from harness.exec import run
from harness.results.model import Environment, NodeEnvironment

# tool → (argv, parser of its combined stdout+stderr)
_VERSION_RE: dict[str, tuple[list[str], str]] = {
    "iperf3": (["iperf3", "--version"], r"iperf ([\d.]+)"),
    "etcd": (["etcd", "--version"], r"etcd Version:\s*([\w.+-]+)"),
    "bird": (["bird", "--version"], r"BIRD version ([\w.+-]+)"),
    "wireguard-go": (["wireguard-go", "--version"], r"wireguard-go v?([\w.+-]+)"),
    "wg": (["wg", "--version"], r"wireguard-tools v?([\w.+-]+)"),
    "nft": (["nft", "--version"], r"nftables v?([\w.+-]+)"),
    "tcpdump": (["tcpdump", "--version"], r"tcpdump version ([\w.+-]+)"),
}
TOOLS = tuple(_VERSION_RE)
ABSENT = "absent"


def parse_version(tool: str, output: str) -> str:
    """The version number in ``tool``'s ``--version`` output, or "unknown"."""
    match = re.search(_VERSION_RE[tool][1], output)
    return match.group(1) if match else "unknown"


def parse_cpu_model(cpuinfo: str) -> str:
    """The first "model name" in /proc/cpuinfo text ("" when there is none)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""


def tool_version(tool: str, runner: Callable[..., object] = run) -> str:
    """Run ``tool --version``; "absent" when the tool is not installed."""
    argv = _VERSION_RE[tool][0]
    try:
        res = runner(argv, timeout=10, check=False)
    except ToolError:
        return ABSENT
    out = f"{getattr(res, 'stdout', '')}\n{getattr(res, 'stderr', '')}"
    return parse_version(tool, out)


def git_state(repo: Path | None = None) -> tuple[str, bool | None]:
    """(commit, dirty) of the podlab checkout; ("unknown", None) outside one."""
    root = repo or Path(__file__).resolve().parents[2]
    try:
        head = run(["git", "-C", str(root), "rev-parse", "HEAD"], timeout=10, check=False)
        if head.returncode != 0:
            return "unknown", None
        status = run(["git", "-C", str(root), "status", "--porcelain"], timeout=10, check=False)
    except ToolError:
        return "unknown", None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip(), dirty


def podlab_version() -> str:
    """The installed podlab distribution's version."""
    try:
        return metadata.version("podlab")
    except metadata.PackageNotFoundError:
        from harness import __version__

        return __version__


def lab_nodes(lab: str | None) -> tuple[str, tuple[NodeEnvironment, ...]]:
    """(backend, nodes) of a lab that is up, from its ledger; ("", ()) if unknown.

    A netns node runs the host's kernel; a VM runs the image's, under KVM or TCG.
    """
    if not lab:
        return "", ()
    from harness.lab import status

    labs = status.lab_status(lab)["labs"]
    if not labs:
        return "", ()
    entry = labs[0]
    nodes = tuple(
        NodeEnvironment(
            node=n["node"],
            backend=entry["backend"],
            kernel=n.get("kernel") or platform.release(),
            accel=n.get("accel") or "",
        )
        for n in entry["nodes"]
    )
    return str(entry["backend"]), nodes


def capture(
    fallbacks: Iterable[str] = (), tools: Iterable[str] = TOOLS, lab: str | None = None
) -> Environment:
    """Describe this machine: kernel, CPUs, tool versions, git commit, fallbacks,
    and (given ``lab``) the lab's backend and each node's kernel."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    commit, dirty = git_state()
    backend, nodes = lab_nodes(lab)
    return Environment(
        backend=backend or "netns",
        emulated=any(n.accel == "tcg" for n in nodes),
        nodes=nodes,
        kernel=platform.release(),
        cpu_count=os.cpu_count() or 0,
        cpu_model=parse_cpu_model(cpuinfo),
        python=platform.python_version(),
        podlab=podlab_version(),
        git_commit=commit,
        git_dirty=dirty,
        hostname=platform.node(),
        tools={t: tool_version(t) for t in tools},
        fallbacks=tuple(dict.fromkeys(fallbacks)),
    )
