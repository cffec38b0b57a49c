"""Small pyroute2 helpers the agent's modules share.

Everything here acts on the namespace the calling ``IPRoute`` is bound to: the
agent runs inside its node's namespace and never opens the host's. Links are
ensured-or-recreated with the reason logged; addresses, routes and neighbours are
set idempotently.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("podlab.netlink")

AF_INET = 2
AF_BRIDGE = 7
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
MAIN_TABLE = 254
ENOENT = 2
ESRCH = 3
EEXIST = 17


def attr(msg: Any, name: str, default: Any = None) -> Any:
    """An attribute of a netlink message, or ``default``."""
    value = msg.get_attr(name)
    return default if value is None else value


def ifindex(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def link(ipr: IPRoute, name: str) -> Any | None:
    idx = ifindex(ipr, name)
    return ipr.get_links(idx)[0] if idx else None


def ensure_link(
    ipr: IPRoute,
    name: str,
    create: dict[str, Any],
    wrong: Callable[[Any], str | None] = lambda _msg: None,
) -> int:
    """Make sure link ``name`` exists and is right; recreate it (reason logged) if not.

    ``wrong(link_msg)`` returns why an existing link does not match, or None.
    Returns the link's ifindex.
    """
    existing = link(ipr, name)
    if existing is not None:
        reason = wrong(existing)
        if reason is None:
            return int(existing["index"])
        log.warning("recreating %s: %s", name, reason)
        ipr.link("del", index=existing["index"])
    ipr.link("add", ifname=name, **create)
    idx = ifindex(ipr, name)
    if idx is None:
        raise RuntimeError(f"link {name} vanished right after creation")
    log.info("created %s (%s)", name, create.get("kind", "link"))
    return idx


def ensure_up(ipr: IPRoute, idx: int, mtu: int | None = None) -> None:
    """Set a link up (and its MTU), only sending what differs."""
    msg = ipr.get_links(idx)[0]
    changes: dict[str, Any] = {}
    if mtu is not None and attr(msg, "IFLA_MTU") != mtu:
        changes["mtu"] = mtu
    if not msg["flags"] & 1:  # IFF_UP
        changes["state"] = "up"
    if changes:
        ipr.link("set", index=idx, **changes)


def ensure_addr(ipr: IPRoute, idx: int, iface: ipaddress.IPv4Interface) -> None:
    """Give link ``idx`` exactly this IPv4 address, removing any other IPv4 address."""
    have = {
        (attr(a, "IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=AF_INET)
    }
    want = (str(iface.ip), iface.network.prefixlen)
    for address, plen in have - {want}:
        log.info("removing stale address %s/%s from ifindex %d", address, plen, idx)
        ipr.addr("del", index=idx, address=address, prefixlen=plen)
    if want not in have:
        ipr.addr("add", index=idx, address=want[0], prefixlen=want[1])


def ignore_missing(fn: Callable[[], Any]) -> None:
    """Run a delete, treating 'already gone' as success (idempotent removal)."""
    try:
        fn()
    except NetlinkError as exc:
        if exc.code not in (ENOENT, ESRCH, 19):  # 19 = ENODEV
            raise


def stable_mac(seed: str) -> str:
    """A locally administered unicast MAC derived from ``seed`` (same node, same MAC)."""
    import hashlib

    h = hashlib.sha256(seed.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x0E, *h[:5]))


def set_sysctl(path: str, value: str) -> None:
    """Write a per-namespace sysctl (``/proc/sys/net/...``) for the CURRENT netns only."""
    full = os.path.join("/proc/sys", path)
    with open(full) as f:
        if f.read().strip() == value:
            return
    with open(full, "w") as f:
        f.write(value)


def netns_inode(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


#: The kernel's fixed inode number of the initial network namespace (init_net,
#: PROC_NET_INIT_INO, stable since Linux 3.8): the host's own namespace.
INIT_NET_INO = 0xEFFFFFF9


def in_root_netns() -> bool:
    """True when this process runs in the host's initial network namespace.

    Compared with the kernel's fixed init_net inode rather than PID 1's namespace:
    /proc/1/ns may be unreadable (a VM's init), and in a container PID 1 shares the
    container's namespace, which is a node, not the host.
    """
    return os.stat("/proc/self/ns/net").st_ino == INIT_NET_INO


def load_module(name: str) -> bool:
    """Ask for kernel module ``name`` (``modprobe``, patient: an emulated guest may
    take many seconds); True if it is loaded afterwards. Where the kernel has no
    such module (this host), modprobe simply fails and the caller falls back."""
    from pathlib import Path

    from harness.errors import ToolError
    from harness.exec import run

    if Path(f"/sys/module/{name}").exists():
        return True
    try:
        run(["modprobe", "-q", name], timeout=120, check=False)
    except ToolError:
        return False
    return Path(f"/sys/module/{name}").exists()
