"""Node holders: the long-lived process whose namespaces *are* a netns node.

``spawn_node`` forks; the child joins the lab's cgroup, unshares net, mount,
uts and PID namespaces, makes its mounts private, drops every namespace handle
and ``/run`` sub-mount it inherited (so a node never pins another lab's netns),
sets the hostname, mounts a private tmpfs on ``/run`` and bind-mounts the
node's own ``/etc/podlab``, ``/var/lib/podlab``, ``/var/log/podlab``,
``/opt/podlab``, the CNI directories (``/opt/cni``, ``/etc/cni``,
``/var/lib/cni``), podman's (``/etc/containers``, ``/var/lib/containers``) and
``/etc/hostname`` from the lab directory (in the node's
mount namespace only: the host's files are never written). It then forks the
holder, PID 1 of the node's PID namespace, which mounts the node's own
``/proc`` and becomes ``podlab-init`` (``pid1.py``: it reaps the node's
orphans, as init does), and exits, so the holder is re-parented to the host's
pid 1 and never waits on the short-lived ``podlab`` process.

Pids: the ledger, ``down``, ``cleanup`` and ``status`` keep host pids (the
holder's is what ``fork`` returned here; a pid a node writes into a pid file is
translated with ``sysns.host_pid``). Inside a node, ``ps``, ``kill``, pid files
and the agent see only the node's own processes, with the node's pids.

``enter_node`` is the other direction: put the calling process into a node's
namespaces (used by ``podlab exec`` and to start sshd).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import LabError
from harness.lab import sysns

# host path (a mountpoint, created empty if missing) -> subdirectory of the node dir
PRIVATE_DIRS = {
    "/etc/podlab": "etc",
    "/var/lib/podlab": "lib",
    "/var/log/podlab": "log",
    "/opt/podlab": "opt",
    # CNI: plugins, network configs and libcni's result cache are per node (docs/cni.md)
    "/opt/cni": "opt-cni",
    "/etc/cni": "etc-cni",
    "/var/lib/cni": "lib-cni",
    # podman's configuration and storage, for a container runtime on the node
    "/etc/containers": "etc-containers",
    "/var/lib/containers": "lib-containers",
}
RUN_DIRS = ("/run/sshd", "/run/podlab", "/run/lock")
# What a node holder unshares. CLONE_NEWPID applies to the holder's children: the
# holder forked next is PID 1 of the node and every later process of the node is
# its descendant or enters through ``enter_node``.
NODE_NAMESPACES = sysns.CLONE_NEWNET | sysns.CLONE_NEWNS | sysns.CLONE_NEWUTS | sysns.CLONE_NEWPID
PID1 = Path(__file__).with_name("pid1.py")


@dataclass(frozen=True)
class Holder:
    """A running node holder: its pid, start time and namespace inodes."""

    pid: int
    start: int
    net: int
    mnt: int


def ensure_mountpoints() -> None:
    """Create the (empty) host directories node-private dirs are mounted on."""
    for path in PRIVATE_DIRS:
        Path(path).mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Pending:
    """A node holder being set up by a forked child (see ``start_node``)."""

    node: str
    child: int
    pipe: int


def spawn_node(lab: str, node: str, node_dir: Path, cgroup_procs: Path | None) -> Holder:
    """Start one node holder and return it once its namespaces are ready."""
    return finish_node(start_node(lab, node, node_dir, cgroup_procs))


def start_node(
    lab: str,
    node: str,
    node_dir: Path,
    cgroup_procs: Path | None,
    binds: tuple[tuple[str, str, bool], ...] = (),
) -> Pending:
    """Fork the set-up child of one node and return at once.

    Starting every node before waiting for any lets the kernel overlap their
    set-up (mount copies, RCU grace periods of the detaches): a 50-node lab's
    holders come up in a fraction of the sequential time. Must be called while
    the process is single-threaded (fork safety).
    """
    for sub in PRIVATE_DIRS.values():
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        os.close(rfd)
        try:
            holder = _child(lab, node, node_dir, cgroup_procs, binds)
            os.write(wfd, f"OK {holder}".encode())
            os._exit(0)
        except BaseException as exc:
            os.write(wfd, f"ERR {exc}".encode())
            os._exit(1)
    os.close(wfd)
    return Pending(node, child, rfd)


def finish_node(pending: Pending) -> Holder:
    """Wait for a started node's child; return the holder it left running."""
    with os.fdopen(pending.pipe, "rb") as pipe:
        answer = pipe.read().decode(errors="replace")
    os.waitpid(pending.child, 0)
    node = pending.node
    if not answer.startswith("OK "):
        raise LabError(f"node {node}: could not create its namespaces: {answer[4:] or 'no answer'}")
    pid = int(answer.split()[1])
    start = sysns.start_time(pid)
    net, mnt = sysns.ns_links(pid)
    if start is None or net is None or mnt is None:
        raise LabError(f"node {node}: holder process {pid} died right after start")
    return Holder(pid, start, net, mnt)


def _child(
    lab: str,
    node: str,
    node_dir: Path,
    cgroup_procs: Path | None,
    binds: tuple[tuple[str, str, bool], ...] = (),
) -> int:
    """Namespace set-up inside the forked child; returns the holder's pid."""
    os.setsid()
    if cgroup_procs is not None:
        cgroup_procs.write_text("0")
    sysns.unshare(NODE_NAMESPACES)
    sysns.mount("none", "/", None, sysns.MS_REC | sysns.MS_PRIVATE)
    _drop_inherited_mounts()
    sysns.sethostname(node)
    sysns.mount("tmpfs", "/run", "tmpfs", 0, "mode=755,size=64m")
    for path in RUN_DIRS:
        os.makedirs(path, mode=0o755, exist_ok=True)
    for target, sub in PRIVATE_DIRS.items():
        sysns.mount(str(node_dir / sub), target, None, sysns.MS_BIND)
    if os.path.isfile("/etc/hostname"):  # the node's own name, in its own mount ns only
        hostname = node_dir / "hostname"
        hostname.write_text(f"{node}\n")
        sysns.mount(str(hostname), "/etc/hostname", None, sysns.MS_BIND)
    for src, dst, read_only in binds:  # containerlab's binds: below private dirs only
        _bind(src, dst, read_only)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    holder = os.fork()
    if holder == 0:  # PID 1 of the node's new PID namespace
        os.close(ready_r)
        _become_init(lab, node, ready_w)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        answer = ready.read().decode(errors="replace")  # "M" then EOF at the exec
    if answer != "M":
        raise OSError(f"init of {node} failed: {answer[1:] or 'it died before mounting /proc'}")
    return holder


def _bind(src: str, dst: str, read_only: bool) -> None:
    """Bind ``src`` onto ``dst`` in this (the node's) mount namespace.

    ``dst`` lies below a private directory or the private /run (checked by the
    loader), so the mountpoint created here is in the lab directory or a tmpfs.
    """
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        Path(dst).touch(exist_ok=True)
    sysns.mount(src, dst, None, sysns.MS_BIND)
    if read_only:
        flags = sysns.MS_BIND | sysns.MS_REMOUNT | sysns.MS_RDONLY
        sysns.mount("none", dst, None, flags)


def _become_init(lab: str, node: str, ready: int) -> None:  # pragma: no cover - forked child
    """Mount the node's own /proc (only PID 1 of the namespace can), then exec pid1.py.

    ``ready`` (close-on-exec) gets "M" once /proc is mounted; a successful exec closes
    it, a failed one writes the reason after the "M".
    """
    try:
        sysns.mount("proc", "/proc", "proc", sysns.MS_NOSUID | sysns.MS_NODEV | sysns.MS_NOEXEC)
        os.write(ready, b"M")
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, ready)
        os.closerange(ready + 1, 65536)
        os.chdir("/")
        argv = ["podlab-init", "-I", "-S", str(PID1), f"{lab}/{node}"]
        os.execv(sys.executable, argv)
    except BaseException as exc:
        os.write(ready, f"E{exc}".encode())
    finally:
        os._exit(127)


def _drop_inherited_mounts() -> None:
    """Detach copies of namespace handles and of /run sub-mounts in the new mount ns.

    Without this a node would hold every /run/netns handle that existed when it
    was born, keeping other labs' namespaces alive after their ``down``.
    """
    targets = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            left, _, right = line.partition(" - ")
            mountpoint = left.split()[4].replace("\\040", " ")
            fstype = right.split()[0] if right else ""
            if fstype == "nsfs" or mountpoint.startswith("/run/"):
                targets.append(mountpoint)
    # Detach only top-most ones: a detach takes its sub-mounts along, and every
    # umount costs an RCU grace period (one /run/netns instead of one per handle).
    tops = {t for t in targets if not any(t.startswith(o + "/") for o in targets if o != t)}
    for target in sorted(tops, reverse=True):
        sysns.umount(target)


def enter_node(pid: int, cgroup_procs: Path | None = None) -> None:
    """Move the calling (single-threaded) process into node ``pid``'s namespaces.

    Net, uts and mount at once; the PID namespace only for the children this
    process forks afterwards (setns(2) never moves the caller itself): fork, and
    let the child exec, for a process that sees the node's /proc and pids.
    Joining the node's cgroup first means ``down`` kills whatever this process
    becomes, even if it daemonizes and leaves the namespaces' process tree.
    """
    if cgroup_procs is not None and cgroup_procs.exists():
        cgroup_procs.write_text("0")
    fds = {
        kind: os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY)
        for kind, name in (
            (sysns.CLONE_NEWNET, "net"),
            (sysns.CLONE_NEWUTS, "uts"),
            (sysns.CLONE_NEWNS, "mnt"),
            (sysns.CLONE_NEWPID, "pid"),
        )
    }
    try:
        for kind, fd in fds.items():
            sysns.setns(fd, kind)
    finally:
        for fd in fds.values():
            os.close(fd)
    os.chdir("/")
