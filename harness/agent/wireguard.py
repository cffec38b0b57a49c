"""WireGuard encryption between nodes (``encryption: wireguard`` on any mode).

One WireGuard interface per node, named ``wg-<8 hex of sha256(node)>``: per node,
because wireguard-go keeps its control socket in ``/var/run/wireguard/<iface>.sock``
and netns labs share that directory between nodes. Keys are made on the node:
``ensure_private_key`` runs ``wg genkey`` and writes the key into a 0600 file under
the state dir; it is handed to ``wg`` only as that file's path (never in argv,
never logged, never published) and ``public_key`` derives the public half with
``wg pubkey`` on stdin. Only the public key and the endpoint go to etcd.

``WireGuard.up`` creates the interface: a kernel ``wireguard`` link through
pyroute2 where the module exists (``kernel_wireguard_available``), otherwise a
``wireguard-go -f <iface>`` process in its own session, its pid kept in
``run_dir/wireguard-go.pid`` so an agent restart adopts it instead of starting a
second one. ``set_peers`` makes the peer list exactly the desired one (public key,
endpoint ``ip:port``, allowed IPs = the peer's pod subnet) with one ``wg set``;
``show`` parses ``wg show <iface> dump`` (``parse_dump`` drops the private key
the dump prints before anything is kept).

MTU: Calico reduces the pod MTU by 60 for WireGuard over IPv4 (outer IPv4 20 +
UDP 8 + WireGuard header 16 + auth tag 16); on top of an encapsulating mode the
mode's own overhead is subtracted as well (docs/calico-modes.md).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.agent import netlink as nl
from harness.exec import run

log = logging.getLogger("podlab.wireguard")

DEFAULT_PORT = 51820
# What each family reserves for WireGuard: Calico's wireguardMTU default for IPv4
# (outer IPv4 20 + UDP 8 + data header 16 + Poly1305 tag 16); Flannel's wireguard
# backend reserves 80, room for an outer IPv6 header.
OVERHEAD = 60
FLANNEL_OVERHEAD = 80
SOCKET_DIR = Path("/var/run/wireguard")
PIDFILE = "wireguard-go.pid"  # under the agent's run dir, as its log
LOGFILE = "wireguard-go.log"
PROBE_LINK = "pl-wg-probe"
START_TIMEOUT_S = 10.0


def iface_name(node: str) -> str:
    """This node's WireGuard interface name: ``wg-`` + 8 hex digits (11 characters)."""
    return "wg-" + hashlib.sha256(node.encode()).hexdigest()[:8]


def mtu_for(underlay_mtu: int, mode_overhead: int = 0, flannel: bool = False) -> int:
    """Pod MTU with WireGuard on a mode whose own encapsulation costs ``mode_overhead``."""
    return underlay_mtu - (FLANNEL_OVERHEAD if flannel else OVERHEAD) - mode_overhead


def kernel_wireguard_available(ipr: IPRoute) -> bool:
    """True when the kernel can make ``wireguard`` links (module loaded or loadable)."""
    if nl.load_module("wireguard"):
        return True
    try:
        ipr.link("add", ifname=PROBE_LINK, kind="wireguard")
    except NetlinkError as exc:
        log.info("no kernel wireguard: %s", exc)
        return False
    nl.ignore_missing(lambda: ipr.link("del", ifname=PROBE_LINK))
    return True


def ensure_private_key(state_dir: Path) -> Path:
    """The node's private key file (``state_dir/wireguard/private.key``, mode 0600).

    Generated once with ``wg genkey`` and kept across restarts, so the public key
    peers know stays valid. A key file with looser permissions is tightened.
    """
    kdir = Path(state_dir) / "wireguard"
    kdir.mkdir(parents=True, exist_ok=True)
    os.chmod(kdir, 0o700)
    path = kdir / "private.key"
    if path.exists():
        if path.stat().st_mode & 0o077:
            log.warning("tightening permissions of %s to 0600", path)
            os.chmod(path, 0o600)
        return path
    key = run(["wg", "genkey"], timeout=10).stdout.strip()
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    log.info("generated WireGuard private key %s", path)
    return path


def public_key(private_key_file: Path) -> str:
    """Derive the public key with ``wg pubkey``, feeding the private key on stdin."""
    return run(
        ["wg", "pubkey"], timeout=10, input=Path(private_key_file).read_text()
    ).stdout.strip()


@dataclass(frozen=True)
class PeerSpec:
    """A peer as the agent wants it: from the peer's lease in etcd."""

    public_key: str
    endpoint: tuple[ipaddress.IPv4Address, int]
    allowed_ips: tuple[ipaddress.IPv4Network, ...]


@dataclass(frozen=True)
class PeerState:
    """A peer as ``wg show dump`` reports it."""

    public_key: str
    endpoint: tuple[ipaddress.IPv4Address, int] | None
    allowed_ips: tuple[ipaddress.IPv4Network, ...]
    latest_handshake_s: int  # unix time, 0 = never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive_s: int  # 0 = off

    def spec(self) -> PeerSpec | None:
        if self.endpoint is None:
            return None
        return PeerSpec(self.public_key, self.endpoint, tuple(sorted(self.allowed_ips)))


@dataclass(frozen=True)
class InterfaceState:
    """The interface line of ``wg show dump`` without the private key, plus its peers."""

    public_key: str
    listen_port: int
    fwmark: int
    peers: tuple[PeerState, ...]


def parse_dump(text: str) -> InterfaceState:
    """Parse ``wg show IFACE dump`` (tab separated); the private key is discarded here."""
    lines = [ln.split("\t") for ln in text.splitlines() if ln.strip()]
    if not lines or len(lines[0]) != 4:
        raise ValueError(f"not a wg dump: first line has {len(lines[0]) if lines else 0} fields")
    _private, pub, port, fwmark = lines[0]
    peers = []
    for f in lines[1:]:
        if len(f) != 8:
            raise ValueError(f"not a wg dump peer line: {len(f)} fields")
        peers.append(
            PeerState(
                public_key=f[0],
                endpoint=_endpoint(f[2]),
                allowed_ips=tuple(
                    ipaddress.IPv4Network(a) for a in f[3].split(",") if a not in ("(none)", "")
                ),
                latest_handshake_s=int(f[4]),
                rx_bytes=int(f[5]),
                tx_bytes=int(f[6]),
                persistent_keepalive_s=0 if f[7] == "off" else int(f[7]),
            )
        )
    return InterfaceState(pub, int(port), 0 if fwmark == "off" else int(fwmark, 0), tuple(peers))


def _endpoint(text: str) -> tuple[ipaddress.IPv4Address, int] | None:
    if text == "(none)":
        return None
    host, _, port = text.rpartition(":")
    return ipaddress.IPv4Address(host), int(port)


def set_argv(iface: str, remove: Iterable[str], peers: Iterable[PeerSpec]) -> list[str]:
    """One ``wg set`` command removing ``remove`` and (re)configuring ``peers`` (pure)."""
    argv = ["wg", "set", iface]
    for key in sorted(remove):
        argv += ["peer", key, "remove"]
    for p in sorted(peers, key=lambda p: p.public_key):
        ips = ",".join(str(n) for n in sorted(p.allowed_ips))
        argv += ["peer", p.public_key, "endpoint", f"{p.endpoint[0]}:{p.endpoint[1]}"]
        argv += ["allowed-ips", ips]
    return argv


class WireGuard:
    """This node's WireGuard interface; ``netns`` is for tests (the agent runs inside it)."""

    def __init__(
        self,
        ipr: IPRoute,
        node: str,
        state_dir: Path,
        run_dir: Path,
        port: int = DEFAULT_PORT,
        netns: str | None = None,
        force_userspace: bool = False,
        name: str = "",
    ) -> None:
        self.ipr, self.node, self.port, self.netns = ipr, node, port, netns
        self.force_userspace = force_userspace
        self.name = name or iface_name(node)
        self.state_dir, self.run_dir = Path(state_dir), Path(run_dir)
        self.pidfile = self.run_dir / PIDFILE
        self.kind = ""  # "kernel" or "wireguard-go", set by up()
        self._proc: subprocess.Popen[bytes] | None = None

    def up(self, mtu: int, address: ipaddress.IPv4Interface | None = None) -> str:
        """Ensure the interface, key, port, MTU and address; returns the public key."""
        key = ensure_private_key(self.state_dir)
        want_go = self.force_userspace or not kernel_wireguard_available(self.ipr)
        exists = nl.ifindex(self.ipr, self.name) is not None
        if exists and not self.kind and (self.userspace_pid() is not None) != want_go:
            self.down()  # made by an earlier agent with the other implementation: recreate
        if nl.ifindex(self.ipr, self.name) is None:
            if not want_go:
                self.ipr.link("add", ifname=self.name, kind="wireguard")
                self.kind = "kernel"
            else:
                self._start_userspace()
                self.kind = "wireguard-go"
            log.info("WireGuard interface %s (%s)", self.name, self.kind)
        elif not self.kind:
            self.kind = "wireguard-go" if self.userspace_pid() else "kernel"
        self._wg("set", self.name, "private-key", str(key), "listen-port", str(self.port))
        idx = nl.ifindex(self.ipr, self.name)
        assert idx is not None
        if address is not None:
            nl.ensure_addr(self.ipr, idx, address)
        nl.ensure_up(self.ipr, idx, mtu)
        return public_key(key)

    def userspace_pid(self) -> int | None:
        """The running wireguard-go's pid (from the pid file), if any."""
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def _start_userspace(self) -> None:
        if self.userspace_pid() is not None:
            return  # adopted after an agent restart; the interface is on its way
        self.run_dir.mkdir(parents=True, exist_ok=True)
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with open(self.run_dir / LOGFILE, "ab") as out:
            self._proc = subprocess.Popen(
                [*prefix, "wireguard-go", "-f", self.name],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives an agent restart, like BIRD
                env={**os.environ, "WG_PROCESS_FOREGROUND": "1"},
            )
        self.pidfile.write_text(f"{self._proc.pid}\n")
        sock = SOCKET_DIR / f"{self.name}.sock"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if nl.ifindex(self.ipr, self.name) is not None and sock.exists():
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        log_text = (self.run_dir / LOGFILE).read_text(errors="replace")[-500:]
        self.down()
        raise RuntimeError(f"wireguard-go {self.name} did not come up: {log_text.strip()}")

    def show(self) -> InterfaceState:
        return parse_dump(self._wg("show", self.name, "dump"))

    def set_peers(self, peers: Iterable[PeerSpec]) -> None:
        """Make the peer list exactly ``peers`` (one ``wg set``; nothing sent if equal)."""
        want = {p.public_key: p for p in peers}
        have = {p.public_key: p.spec() for p in self.show().peers}
        remove = set(have) - set(want)
        change = [
            p
            for k, p in want.items()
            if have.get(k) != PeerSpec(p.public_key, p.endpoint, tuple(sorted(p.allowed_ips)))
        ]
        if remove or change:
            self._wg(*set_argv(self.name, remove, change)[1:])
            log.info("wireguard peers: %d set, %d removed", len(change), len(remove))

    def down(self) -> None:
        """Remove the interface: stop wireguard-go by its pid, or delete the kernel link."""
        pid = self.userspace_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.userspace_pid() is not None:
                if self._proc is not None:
                    self._proc.poll()  # reap our own child so it stops counting as alive
                time.sleep(0.05)
            if self.userspace_pid() is not None:
                os.kill(pid, signal.SIGKILL)
                if self._proc is not None:
                    self._proc.wait(timeout=5)
            self.pidfile.unlink(missing_ok=True)
        nl.ignore_missing(lambda: self.ipr.link("del", ifname=self.name))

    def _wg(self, *args: str) -> str:
        return run(["wg", *args], timeout=10, netns=self.netns).stdout
