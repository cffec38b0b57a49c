"""What the guest image contains, and the cache key derived from exactly that.

The key is a hash of the suite, the package list, the recipe version, the
bytes of every file copied into the image (``guest/``) and the agent's Python
dependencies baked into its venv (each pinned to the host's version, with pip
and the Python they were built for), so any change to what
would be built gives a new key (and a new build), and an unchanged recipe
always finds its cached image. ``RECIPE_VERSION`` is the build code's part:
bump it with any change to ``build.py`` that changes what it produces.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

from harness.deploy import wheel

RECIPE_VERSION = 2
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CACHE_ROOT = Path("/var/cache/podlab/images")

# Everything a podlab node needs, since guests have no route to a mirror: the
# common role's packages (iproute2 … supervisor, etcd), what the datapaths and
# proxies call (nftables, iptables, ipset, ipvsadm, wireguard), the probes
# (iperf3, tcpdump, ping, socat) and a systemd userland with sshd.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "openssh-server",
    "python3",
    "python3-venv",
    "linux-image-amd64",
    "initramfs-tools",
    "iproute2",
    "iputils-ping",
    "procps",
    "ethtool",
    "nftables",
    "iptables",
    "ipset",
    "ipvsadm",
    "conntrack",
    "iperf3",
    "tcpdump",
    "socat",
    "bird2",
    "wireguard-tools",
    "wireguard-go",
    "supervisor",
    "etcd-server",
    "etcd-client",
)

GUEST_DIR = Path(__file__).parent / "guest"


# The agent's venv in the image (the agent role's ``agent_venv``) and where pip
# lies unpacked and byte-compiled (``agent_pip_dir``): a deploy then installs
# only podlab's own wheel, with a pip that needs no compiling either.
VENV = "/opt/podlab/venv"
PIP_DIR = "/opt/podlab/pip"


def venv_pins() -> tuple[str, ...]:
    """What the image's venv holds: the agent's dependency closure, then pip, pinned."""
    return (*wheel.dependency_closure(), *wheel.pinned_requirements(wheel.BOOTSTRAP))


def key(
    packages: tuple[str, ...] = PACKAGES,
    suite: str = SUITE,
    venv: tuple[str, ...] | None = None,
) -> str:
    """The cache key: 16 hex digits of a hash over everything that shapes the image."""
    venv = venv_pins() if venv is None else venv
    # The wheels are built by the host's pip for the host's Python: the tag is part of it.
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    h = hashlib.sha256()
    h.update(json.dumps([RECIPE_VERSION, suite, sorted(packages), tag, sorted(venv)]).encode())
    for path in sorted(GUEST_DIR.iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """``$PODLAB_IMAGE_CACHE`` or ``/var/cache/podlab/images``: outside every clone."""
    return Path(os.environ.get("PODLAB_IMAGE_CACHE") or CACHE_ROOT)


def mirror(sources: tuple[Path, ...] = (Path("/etc/apt/sources.list.d"),)) -> str:
    """The Debian mirror apt already uses here (``$PODLAB_DEBIAN_MIRROR`` wins).

    Guests are built from the same packages the host installs, from the same
    place; nothing is fetched from anywhere apt is not already configured for.
    """
    env = os.environ.get("PODLAB_DEBIAN_MIRROR")
    if env:
        return env
    files: list[Path] = [Path("/etc/apt/sources.list")]
    for d in sources:
        if d.is_dir():
            files += sorted(d.iterdir())
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        found = mirror_in(text)
        if found:
            return found
    return DEFAULT_MIRROR


def mirror_in(text: str) -> str | None:
    """The main-archive URI of a sources.list or deb822 .sources text (not -security)."""
    for m in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
        if _debian(m.group(1)):
            return m.group(1)
    for m in re.finditer(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M):
        if _debian(m.group(1)):
            return m.group(1)
    return None


def _debian(uri: str) -> bool:
    return uri.rstrip("/").endswith("/debian")
