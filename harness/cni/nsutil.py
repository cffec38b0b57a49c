"""Network namespaces without forking: create, remove, and open netlink sockets in one.

pyroute2 (0.9) forks a child process for ``netns.create`` and for every
``IPRoute(netns=…)``: about 15 and 12 ms each here, more from a large
multi-threaded agent. A network namespace belongs to a *thread*, so a
short-lived helper thread can ``unshare``/``setns`` into it, make what is needed
(a bind mount of its namespace, a socket, which stays in the namespace it was
made in) and exit; the caller's own thread never changes namespace, so nothing
can leave it in the wrong one. About 0.5 ms per namespace and 0.3 ms per socket
(``bench/bench_cni.py`` prints the figures).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

_libc = ctypes.CDLL(None, use_errno=True)
_shared_dirs: set[str] = set()
_shared_lock = threading.Lock()
T = TypeVar("T")


def _check(rc: int, what: str, path: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} failed: {os.strerror(err)}", path)


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread and return its result (or raise its error).

    The thread may change its network namespace freely: it ends right after.
    """
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=body, name="netns-helper", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns", path)
    finally:
        os.close(fd)


def is_netns(path: str) -> bool:
    """True if ``path`` is a network namespace handle (nsfs file or /proc/…/ns/net)."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/thread-self/ns/net").st_dev
    except OSError:
        return False


def same_as_current(path: str) -> bool:
    """True if ``path`` is the calling thread's own network namespace."""
    try:
        a, b = os.stat(path), os.stat("/proc/thread-self/ns/net")
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def share_dir(directory: Path) -> None:
    """Make ``directory`` a shared mount (as ``ip netns add`` does for /run/netns), once.

    Namespace handles bound under a shared mount show up in mount namespaces
    that copied it later (e.g. a pod's private mount namespace for its resolver
    files), so a handle never pins a namespace out of reach of ``remove``.
    """
    key = str(directory)
    with _shared_lock:
        if key in _shared_dirs:
            return
        directory.mkdir(parents=True, exist_ok=True)
        path = key.encode()
        if _libc.mount(b"none", path, None, MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(path, path, None, MS_BIND | MS_REC, None), "bind", key)
            _check(_libc.mount(b"none", path, None, MS_SHARED | MS_REC, None), "share", key)
        _shared_dirs.add(key)


def create(path: str, lo_up: bool = False) -> None:
    """A new network namespace bind-mounted at ``path`` (which must not exist).

    ``lo_up`` brings its loopback up from the same helper thread (a runtime's job:
    podman does it, the agent too), saving a second trip into the namespace.
    """
    share_dir(Path(path).parent)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
    os.close(fd)

    def make() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare", path)
        me = b"/proc/thread-self/ns/net"
        _check(_libc.mount(me, path.encode(), None, MS_BIND, None), "bind mount", path)
        if lo_up:
            _loopback_up()

    try:
        _in_thread(make)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _loopback_up() -> None:
    """``lo`` up in the calling thread's namespace: one ioctl, no netlink library."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifr)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def remove(path: str) -> None:
    """Unmount and delete a namespace handle; a missing one is fine."""
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount failed: {os.strerror(err)}", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def socket_in(path: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket created inside the network namespace at ``path``."""

    def make() -> socket.socket:
        _setns(path)
        return socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)

    return _in_thread(make)


def iproute(path: str | None = None) -> IPRoute:
    """An ``IPRoute`` bound to the namespace at ``path`` (None: the caller's), no multicast."""
    if path is None:
        return IPRoute(groups=0)
    sock = socket_in(path, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    return IPRoute(use_socket=sock, groups=0)
