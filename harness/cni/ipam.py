"""Node-local IPAM: pod addresses from the node's leased subnet, one file per address.

The node's subnet comes from its lease in etcd (the agent writes it to
``subnet.env``); addresses inside it are this node's alone, so they are handed
out here without asking etcd, as Calico hands out addresses from a block its
node has affinity to. Layout, under the plugin's ``dataDir``:

    ipam/<a.b.c.d-len>/lock          flock(2) held while choosing an address
    ipam/<a.b.c.d-len>/<address>     one reservation: JSON {network, containerID,
                                     ifname, hostIf, created}
    ipam/<a.b.c.d-len>/owner/<network>:<containerID>:<ifname>
                                     a symlink to the address: finding an
                                     attachment's address reads no other file

Crash safety: a reservation is written aside and hard-linked into place (which
fails if the address is taken) before any interface exists, under the lock, so
two ADDs (threads of the agent's CNI server or separate plugin processes) never
get one address, and a crash never leaves a torn reservation. A crash after that leaves a
reservation and maybe half an interface: the runtime's DEL (which the spec
requires even after a failed ADD) or GC (every reservation of the network whose
attachment is not in ``cni.dev/valid-attachments``) frees it. The lowest free
address is used, so a freed address is reused first (predictable in a lab).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.cni.spec import INTERNAL, TRY_AGAIN_LATER, CniError

#: A half-written reservation (a crash between writing and linking it) older than
#: this is removed by GC; a live ADD takes milliseconds.
STALE_TMP_S = 60.0


@dataclass(frozen=True)
class Reservation:
    """Who holds one address."""

    address: str
    network: str
    container_id: str
    ifname: str
    host_if: str = ""
    created: float = 0.0

    def owner(self) -> tuple[str, str, str]:
        return self.network, self.container_id, self.ifname


class Pool:
    """The reservations of one subnet; safe across threads and processes (flock)."""

    def __init__(self, data_dir: Path, subnet: ipaddress.IPv4Network, gateway: str | None) -> None:
        self.subnet = subnet
        self.gateway = gateway
        self.dir = data_dir / "ipam" / str(subnet).replace("/", "-")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self, name: str) -> Reservation | None:
        try:
            data = json.loads((self.dir / name).read_text())
            return Reservation(
                name,
                str(data["network"]),
                str(data["containerID"]),
                str(data["ifname"]),
                str(data.get("hostIf", "")),
                float(data.get("created", 0.0)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def reservations(self) -> list[Reservation]:
        """Every readable reservation (a torn or foreign file is skipped)."""
        if not self.dir.is_dir():
            return []
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name[0].isdigit() and (r := self._read(name)) is not None:
                out.append(r)
        return out

    def _owner_link(self, network: str, container_id: str, ifname: str) -> Path:
        name = f"{network}:{container_id}:{ifname}"
        if len(name) > 200:  # names are free-form up to the spec's limits
            name = hashlib.sha256(name.encode()).hexdigest()
        return self.dir / "owner" / name

    def find(self, network: str, container_id: str, ifname: str) -> Reservation | None:
        """This attachment's reservation, through its owner link (no scan)."""
        try:
            address = os.readlink(self._owner_link(network, container_id, ifname))
        except OSError:
            return None
        r = self._read(address)
        return r if r is not None and r.owner() == (network, container_id, ifname) else None

    def reserve(
        self,
        network: str,
        container_id: str,
        ifname: str,
        host_if: str,
        wanted: str | None = None,
    ) -> Reservation:
        """An address for this attachment: its existing one, ``wanted``, or the lowest free.

        Raises CniError 11 (try again later) when the subnet is full, and code
        999 when ``wanted`` is outside the subnet or held by someone else. Only
        file names are listed: no reservation is read unless ``wanted`` is taken.
        """
        with self.locked():
            mine = self.find(network, container_id, ifname)
            if mine is not None:
                return mine
            taken = {n for n in os.listdir(self.dir) if n[0].isdigit()}
            owner = (network, container_id, ifname)
            if wanted is not None:
                address = self._check_wanted(wanted, taken, owner)
            else:
                address = self._lowest_free(taken)
            res = Reservation(address, network, container_id, ifname, host_if, time.time())
            data = {"network": network, "containerID": container_id, "ifname": ifname,
                    "hostIf": host_if, "created": res.created}  # fmt: skip
            # whole or not at all: written aside, then linked in (EEXIST if taken), so a
            # crash never leaves a torn reservation nobody could read or free
            tmp = self.dir / f".{address}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_text(json.dumps(data))
            try:
                os.link(tmp, self.dir / address)
            finally:
                tmp.unlink(missing_ok=True)
            link = self._owner_link(network, container_id, ifname)
            link.parent.mkdir(exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                link.unlink()  # left by a crash after its address was freed
            link.symlink_to(address)
            return res

    def _lowest_free(self, taken: set[str]) -> str:
        for host in self.subnet.hosts():
            if str(host) != self.gateway and str(host) not in taken:
                return str(host)
        raise CniError(
            TRY_AGAIN_LATER,
            f"no free address in {self.subnet}",
            f"{len(taken)} addresses reserved in {self.dir}; delete pods or run GC",
        )

    def _check_wanted(self, wanted: str, taken: set[str], owner: tuple[str, str, str]) -> str:
        try:
            address = ipaddress.IPv4Address(wanted.split("/")[0])
        except ValueError as exc:
            raise CniError(INTERNAL, f"requested address {wanted!r} is not IPv4") from exc
        if address not in self.subnet or str(address) == self.gateway:
            raise CniError(
                INTERNAL, f"requested address {address} is not a pod address of {self.subnet}"
            )
        held = self._read(str(address)) if str(address) in taken else None
        if str(address) in taken and (held is None or held.owner() != owner):
            who = f"container {held.container_id} ({held.network}, {held.ifname})" if held else "?"
            raise CniError(
                INTERNAL, f"requested address {address} is already reserved", f"by {who}"
            )
        return str(address)

    def release(self, network: str, container_id: str, ifname: str) -> list[Reservation]:
        """Free every address this attachment holds; none is fine (DEL is idempotent).

        Through the owner link; without one (a crash between the two files) every
        reservation is read to find it.
        """
        with self.locked():
            link = self._owner_link(network, container_id, ifname)
            found = self.find(network, container_id, ifname)
            owner = (network, container_id, ifname)
            gone = [found] if found else [r for r in self.reservations() if r.owner() == owner]
            for r in gone:
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / r.address).unlink()
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            return gone

    def collect(self, network: str, valid: set[tuple[str, str]]) -> list[Reservation]:
        """Free the reservations of ``network`` whose (containerID, ifname) is not valid."""
        with self.locked():
            stale = [
                r
                for r in self.reservations()
                if r.network == network and (r.container_id, r.ifname) not in valid
            ]
            for r in stale:
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / r.address).unlink()
                with contextlib.suppress(FileNotFoundError):
                    self._owner_link(*r.owner()).unlink()
            for leftover in self.dir.glob(".*.tmp"):  # a reservation a crash cut short
                with contextlib.suppress(OSError):
                    if time.time() - leftover.stat().st_mtime > STALE_TMP_S:
                        leftover.unlink()
            owners = self.dir / "owner"
            for link in owners.iterdir() if owners.is_dir() else []:
                if not (self.dir / os.readlink(link)).exists():  # dangling: its address is gone
                    link.unlink(missing_ok=True)
            return stale


def pools(data_dir: Path) -> list[Path]:
    """Every subnet directory under ``data_dir`` (a node's subnet may have changed)."""
    base = data_dir / "ipam"
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def pool_from_dir(data_dir: Path, directory: Path) -> Pool:
    subnet = ipaddress.IPv4Network(directory.name.replace("-", "/"))
    return Pool(data_dir, subnet, None)
