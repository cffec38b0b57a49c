"""Linux namespace, mount and process primitives the netns backend is built on.

Python 3.11 has no ``os.setns``/``os.unshare``, so this wraps libc through
ctypes, once, here. Everything is by pid, by inode or by explicit path: no
helper ever looks a process up by its name. Processes are identified by
``(pid, start time)`` so a recycled pid is never mistaken for ours, and they
are signalled through a pidfd so the kill cannot hit a newcomer.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import LabError

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread/process."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2): move the calling thread into the namespace open on ``fd``."""
    _check(_libc.setns(fd, nstype), "setns")


def mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2) with plain strings."""
    _check(
        _libc.mount(
            src.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def umount(target: str) -> bool:
    """Lazily detach ``target``; False if it was not mounted (or already gone)."""
    return _libc.umount2(target.encode(), MNT_DETACH) == 0


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def ns_inode(path: str | Path) -> int | None:
    """Inode of a namespace file (``/proc/PID/ns/net``, a ``/run/netns`` handle)."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def stat_fields(raw: str) -> list[str]:
    """The fields of a /proc/PID/stat text from the state (field 3) on: ``[19]`` is the
    start time in clock ticks (field 22). comm may contain spaces and parentheses, so
    the split is after the last ')'; ValueError for a text that has none."""
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks (field 22 of /proc/PID/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat_fields(raw)[19])


def alive(pid: int, started: int | None) -> bool:
    """True if ``pid`` still runs (not a zombie) and is the very process that started
    at ``started``."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat_fields(raw)
    if fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


# ----------------------------------------------------------------- named netns


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def ensure_netns_dir() -> None:
    """Make ``/run/netns`` a shared mount of itself before pinning anything in it, as
    ``ip netns add`` does.

    iproute2 binds the directory onto itself (recursively) the first time it finds
    it is not a mount point. Done after our handles existed, that bind copied each of
    them and left the originals under it, where no path reaches them: ``down`` then
    unmounted the copy and could not unlink the handle (EBUSY). Doing iproute2's step
    first, the way it does it, means a later ``ip netns add`` finds the mount and
    only re-marks it shared.
    """
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        mount("", str(NETNS_DIR), None, MS_SHARED | MS_REC)
    except OSError:
        mount(str(NETNS_DIR), str(NETNS_DIR), None, MS_BIND | MS_REC)
        mount("", str(NETNS_DIR), None, MS_SHARED | MS_REC)


def bind_netns(name: str, source: str) -> int:
    """Pin the namespace at ``source`` as ``/run/netns/<name>``; return its inode."""
    ensure_netns_dir()
    target = netns_path(name)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    try:
        mount(source, str(target), None, MS_BIND)
    except OSError:
        target.unlink(missing_ok=True)
        raise
    ino = ns_inode(target)
    assert ino is not None
    return ino


def create_netns(name: str) -> int:
    """Create an empty named netns (like ``ip netns add``) without a helper process.

    The calling thread unshares, the new namespace is bind-mounted from
    /proc/thread-self, and the thread returns to the namespace it came from.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        unshare(CLONE_NEWNET)
        try:
            return bind_netns(name, "/proc/thread-self/ns/net")
        finally:
            setns(home, CLONE_NEWNET)
    finally:
        os.close(home)


def remove_netns(name: str) -> bool:
    """Unmount (every stacked mount) and unlink ``/run/netns/<name>``; False if it did
    not exist. A handle that stays busy raises LabError naming the cause and the fix."""
    target = netns_path(name)
    if not target.exists():
        return False
    for _ in range(8):
        if not os.path.ismount(target):
            break
        umount(str(target))
    try:
        target.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        raise LabError(
            f"{target}: still mounted where no path reaches it (a bind of /run/netns onto "
            "itself, as `ip netns add` makes, was mounted over it after this lab was made); "
            "it goes away at reboot, or after `umount -R /run/netns` when no other lab runs"
        ) from exc
    return True


@contextmanager
def in_netns(path: str | Path) -> Iterator[None]:
    """Run the block with the calling thread inside the netns at ``path``.

    Sockets opened inside stay bound to that namespace after the block, which
    is how one process configures fifty namespaces without a helper each.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        setns(target, CLONE_NEWNET)
        try:
            yield
        finally:
            setns(home, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


# ------------------------------------------------------------------ processes


def ns_links(pid: int) -> tuple[int | None, int | None]:
    """(net, mnt) namespace inodes of ``pid``; None where unreadable."""
    return ns_inode(f"/proc/{pid}/ns/net"), ns_inode(f"/proc/{pid}/ns/mnt")


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def ns_pids(pid: int) -> list[int]:
    """``pid`` as each PID namespace from ours down to its own sees it (``NSpid``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(v) for v in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


def host_pid(holder: int, node_pid: int, candidates: list[int] | None = None) -> int | None:
    """The host pid of the process a node knows as ``node_pid`` (from a pid file, ``ps``).

    ``holder`` is the node's PID 1 (its host pid); ``candidates`` narrow the search
    (the node cgroup's members), else every process is looked at.
    """
    if node_pid == 1:
        return holder
    pidns = ns_inode(f"/proc/{holder}/ns/pid")
    for pid in candidates if candidates is not None else pids():
        levels = ns_pids(pid)
        if levels and levels[-1] == node_pid and ns_inode(f"/proc/{pid}/ns/pid") == pidns:
            return pid
    return None


def kill_where(
    net_inodes: set[int],
    mnt_inodes: set[int],
    skip: set[int],
    maybe_net: set[int] | None = None,
    confirm: Callable[[int], bool] | None = None,
) -> list[int]:
    """SIGKILL every process living in one of the given namespaces; wait for them.

    Each candidate is opened as a pidfd first and its namespaces read after, so
    the signal reaches exactly the process that was checked, never a pid reuser.
    ``maybe_net`` are inodes only *recorded* earlier: the kernel recycles them
    once a namespace dies, so such a match is killed only if ``confirm(pid)``
    proves the namespace is still ours. Returns the pids killed.
    """
    killed: list[tuple[int, int]] = []
    for pid in pids():
        if pid in skip:
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        net, mnt = ns_links(pid)
        sure = (net is not None and net in net_inodes) or (mnt is not None and mnt in mnt_inodes)
        if not sure and net is not None and net in (maybe_net or ()) and confirm is not None:
            sure = confirm(pid)
        if sure:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                killed.append((pid, pidfd))
                continue
            except OSError:
                pass
        os.close(pidfd)
    wait_exit([fd for _, fd in killed], timeout=5.0)
    return [pid for pid, _ in killed]


def wait_exit(pidfds: list[int], timeout: float) -> None:
    """Wait until every pidfd reports its process exited, then close them."""
    deadline = time.monotonic() + timeout
    pending = list(pidfds)
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(pending, [], [], max(0.0, deadline - time.monotonic()))
        for fd in ready:
            pending.remove(fd)
            os.close(fd)
    for fd in pending:
        os.close(fd)


def kill_pid(pid: int, started: int | None) -> bool:
    """SIGKILL one recorded process if it is still the same process; wait for it."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    if not alive(pid, started):
        os.close(pidfd)
        return False
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        os.close(pidfd)
        return False
    wait_exit([pidfd], timeout=5.0)
    return True
