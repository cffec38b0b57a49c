"""The lab directory and its state ledger.

``.podlab/<lab>/`` (under the working directory, or ``$PODLAB_HOME``: see ``podlab_home``) holds a
marker file, keys, sshd configs, node-private directories and ``state.json``:
the ledger of every kernel object and process the lab made. The ledger is
written *before* each object is created and updated after, atomically, so a
``down`` after a crash halfway through ``up`` still knows what to remove.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import LabError, UserError

MARKER = ".podlab-lab"
REGISTRY = Path("/run/podlab/labs")  # host-wide: lab name -> lab directory
LOCKS = Path("/run/podlab/locks")  # host-wide: one flock per lab name
LEDGER_VERSION = 1


def podlab_home() -> Path:
    """Where lab directories live: ``.podlab/`` under the project home.

    The project home ($PODLAB_HOME, else the working directory) also holds
    ``inventories/``; see ``harness.inventory.project_home``.
    """
    from harness.inventory import project_home

    return project_home() / ".podlab"


@dataclass(frozen=True)
class LabPaths:
    """Every path inside one lab directory."""

    root: Path

    @classmethod
    def of(cls, lab: str) -> LabPaths:
        return cls(podlab_home() / lab)

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    def node_dir(self, node: str) -> Path:
        return self.root / "nodes" / node


@dataclass
class NodeState:
    """What ``up`` made for one node."""

    netns: str
    mgmt: str
    host_veth: str
    role: str = ""
    cluster: str = ""
    underlay: str = ""
    pid: int | None = None
    start: int | None = None
    net_inode: int | None = None
    mnt_inode: int | None = None
    sshd_pid: int | None = None
    sshd_start: int | None = None
    # vm backend: ``pid`` is the node's qemu; these say how it runs.
    vm_accel: str = ""  # kvm | tcg ("" for a netns node)
    vm_memory_mb: int = 0
    vm_cpus: int = 0
    vm_kernel: str = ""  # the guest kernel release (from the image manifest)
    clab_name: str = ""  # the file's node name when podlab derived another (PC1 -> pc1)

    @property
    def is_vm(self) -> bool:
        return bool(self.vm_accel)


@dataclass
class Ledger:
    """state.json: the lab's record of itself (schema ``version`` 1)."""

    lab: str
    source: str
    digest: str
    status: str  # building | up | failed
    mgmt_bridge: str
    mgmt_subnet: str
    version: int = LEDGER_VERSION
    created: float = field(default_factory=time.time)
    nodes: dict[str, NodeState] = field(default_factory=dict)
    bridge_netns: dict[str, int | None] = field(default_factory=dict)  # name -> inode
    root_links: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    cgroup: str | None = None
    owner_pid: int | None = None  # the `podlab up` that is building the lab
    owner_start: int | None = None
    inventory: str | None = None  # inventories/<lab>.yml written by up; down removes it
    backend: str = "netns"  # netns | vm
    image: str | None = None  # vm backend: the cached image key the overlays are backed by

    def save(self, paths: LabPaths) -> None:
        """Atomically replace state.json."""
        tmp = paths.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        tmp.replace(paths.state)

    @classmethod
    def load(cls, paths: LabPaths) -> Ledger:
        try:
            raw: dict[str, Any] = json.loads(paths.state.read_text())
        except FileNotFoundError as exc:
            raise UserError(f"no lab state at {paths.state}") from exc
        except (OSError, ValueError) as exc:
            raise UserError(f"unreadable lab state {paths.state}: {exc}") from exc
        # Keys this version does not know (a ledger written by a newer podlab, e.g.
        # another backend's fields) are left out, so status, exec, down and cleanup
        # still work on every lab of the machine instead of failing on one of them.
        nodes = {
            name: NodeState(**_known(NodeState, data))
            for name, data in raw.pop("nodes", {}).items()
        }
        return cls(nodes=nodes, **_known(cls, raw))

    @property
    def netns_names(self) -> list[str]:
        return [n.netns for n in self.nodes.values()] + list(self.bridge_netns)


def _known(kind: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in data.items() if k in names}


@contextmanager
def lab_lock(lab: str, wait: float = 120.0) -> Iterator[None]:
    """Hold the lab's exclusive lock: one ``up``/``down``/``cleanup`` of a lab at a time.

    Raises LabError if another podlab process keeps it longer than ``wait`` seconds
    (``wait=0``: fail at once). The kernel drops the lock if the holder dies. The
    lock file goes away with the lab (unlinked while held; a waiter that got the
    unlinked file notices the inode changed and retries).
    """
    LOCKS.mkdir(parents=True, exist_ok=True)
    path = LOCKS / f"{lab}.lock"
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LabError(f"lab {lab} is busy: another podlab up/down holds it") from None
            time.sleep(0.05)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        if registered(lab) is None:
            path.unlink(missing_ok=True)
        os.close(fd)


def register(lab: str, paths: LabPaths) -> None:
    """Record the lab in the machine-wide registry (lab names are machine-wide:
    they name namespaces), so ``status``/``down``/``cleanup`` find it from any directory."""
    REGISTRY.mkdir(parents=True, exist_ok=True)
    (REGISTRY / lab).write_text(str(paths.root))


def unregister(lab: str, paths: LabPaths | None = None) -> None:
    entry = REGISTRY / lab
    try:
        if paths is None or entry.read_text().strip() == str(paths.root):
            entry.unlink()
    except OSError:
        pass


def registered(lab: str) -> LabPaths | None:
    """Where lab ``lab`` lives, if the registry knows it."""
    try:
        return LabPaths(Path((REGISTRY / lab).read_text().strip()))
    except OSError:
        return None


def find(lab: str) -> LabPaths:
    """The lab's directory: the registry's, else the one under the podlab home."""
    return registered(lab) or LabPaths.of(lab)


def known_labs() -> dict[str, LabPaths]:
    """Every lab we can see: registered ones and marked dirs under the podlab home."""
    labs: dict[str, LabPaths] = {}
    home = podlab_home()
    if home.is_dir():
        labs.update({p.name: LabPaths(p) for p in home.iterdir() if (p / MARKER).exists()})
    if REGISTRY.is_dir():
        for entry in REGISTRY.iterdir():
            found = registered(entry.name)
            if found is not None:
                labs[entry.name] = found
    return dict(sorted(labs.items()))
