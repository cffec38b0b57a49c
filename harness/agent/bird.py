"""BIRD 2 for the Calico-style ``bgp`` mode: config, process, ``birdc`` and its parser.

Each node runs one BIRD whose config and pid file live in the node's private
run dir and whose control socket is BIRD's own default, ``/run/bird/bird.ctl``
(the agent's ``bird_socket``), so ``birdc show protocols`` typed on a node works
without ``-s``. The agent renders ``bird.conf`` from the cluster's nodes
(``render``), starts BIRD (``Bird.start``: ``bird -c CONF -s SOCK -P PIDFILE``, which
daemonises), reloads it after a peer change (``birdc -s SOCK configure``) and reads
session state back (``birdc show protocols`` → ``parse_protocols``).

What the rendered configuration does (docs/calico-modes.md has the picture):

- ``router id`` = the node's underlay IPv4 address; local AS ``ASN`` (64512, as Calico).
- ``protocol static pods``: the node's pod subnet as a blackhole route, which is
  what BGP announces (the agent still owns the /32 routes to its own pods).
- ``protocol device`` and ``protocol direct`` (underlay interface only), so iBGP
  next hops resolve recursively over the connected underlay network.
- ``protocol kernel``: exports only routes learned over BGP into the main table
  (they show as ``proto bird``); nothing is imported from the kernel, and BIRD
  removes its routes again when it stops.
- one ``protocol bgp`` per peer: full-mesh iBGP by default; with route reflectors
  clients peer only with reflectors, reflectors peer with every node and mark
  clients ``rr client``. Timers are short so tests see changes in seconds.

Parsers are pure (``parse_protocols``, ``parse_routes``) and tested on output
captured from a real BIRD (tests/unit/test_bird_parse.py).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ToolError
from harness.exec import run

log = logging.getLogger("podlab.bird")

ASN = 64512
RTPROT_BIRD = 12  # rtm_protocol of the routes BIRD exports to the kernel ("proto bird")
#: keepalive / hold / connect-retry seconds: short enough that a test sees a session
#: come up or a stopped peer disappear within a few seconds.
KEEPALIVE_S, HOLD_S, CONNECT_RETRY_S = 1, 3, 1
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BgpPeer:
    """One iBGP session of this node: the peer's name, address and whether we reflect to it."""

    node: str
    address: ipaddress.IPv4Address
    rr_client: bool = False
    multihop: bool = False  # peer not on our underlay subnet (routed segments)

    @property
    def protocol(self) -> str:
        """BIRD protocol name (identifier characters only): ``peer_<node>``."""
        return "peer_" + re.sub(r"[^A-Za-z0-9_]", "_", self.node)


@dataclass(frozen=True)
class RouterPeer:
    """An eBGP session with a lab router (native cluster mesh, docs/mesh.md): the
    router's name, its address on our segment and its AS."""

    name: str
    address: ipaddress.IPv4Address
    asn: int

    @property
    def protocol(self) -> str:
        """BIRD protocol name: ``router_<name>`` (never clashes with ``peer_<node>``)."""
        return "router_" + re.sub(r"[^A-Za-z0-9_]", "_", self.name)


@dataclass(frozen=True)
class Session:
    """One line of ``birdc show protocols``."""

    name: str
    proto: str  # BGP, Kernel, Static, Device, Direct
    table: str
    state: str  # up, down, start
    since: str
    info: str  # e.g. "Established", "Active", "Connect", "Passive"

    @property
    def established(self) -> bool:
        return self.proto == "BGP" and self.state == "up" and self.info.startswith("Established")


@dataclass(frozen=True)
class BirdRoute:
    """One route of ``birdc show route``: prefix, next hop and the protocol it came from."""

    prefix: ipaddress.IPv4Network
    kind: str  # unicast, blackhole, unreachable, ...
    protocol: str
    via: ipaddress.IPv4Address | None
    dev: str | None
    primary: bool


def plan_peers(
    me: str, nodes: dict[str, ipaddress.IPv4Address], reflectors: Iterable[str] = ()
) -> list[BgpPeer]:
    """Who ``me`` peers with: everyone (full mesh), or clients ↔ reflectors.

    With reflectors, a client peers only with the reflectors; a reflector peers
    with every other node and treats the non-reflectors as its ``rr client``s.
    """
    rrs = set(reflectors)
    out = []
    for name, addr in sorted(nodes.items()):
        if name == me:
            continue
        if rrs and me not in rrs and name not in rrs:
            continue  # client ↔ client: no session
        out.append(BgpPeer(name, addr, rr_client=bool(rrs) and me in rrs and name not in rrs))
    return out


def render(
    router_id: ipaddress.IPv4Address,
    pod_subnet: ipaddress.IPv4Network,
    underlay_interface: str,
    peers: Iterable[BgpPeer],
    cluster_id: ipaddress.IPv4Address | None = None,
    asn: int = ASN,
    routers: Iterable[RouterPeer] = (),
    cluster_cidr: ipaddress.IPv4Network | None = None,
) -> str:
    """The whole bird.conf for one node (pure; the same inputs give the same text).

    ``routers`` (a node of a native cluster mesh): one eBGP session per lab router
    on the node's segment, our AS ``asn`` against the router's. The node announces
    only its own pod subnet there and learns every other pod route the router
    offers except its own cluster's (``cluster_cidr``); iBGP peers are not sent
    what a router taught (each node hears it from the router itself)."""
    routers = list(routers)
    lines = [
        "# Rendered by podlab-agent (harness.agent.bird); changes are overwritten.",
        f"router id {router_id};",
        "",
        "protocol device { scan time 5; }",
        "",
        "protocol direct {",
        "  ipv4;",
        f'  interface "{underlay_interface}";',
        "}",
        "",
        "protocol kernel {",
        "  ipv4 {",
        "    import none;",
        "    export where source = RTS_BGP;",
        "  };",
        "  merge paths on;",
        "}",
        "",
        "protocol static pods {",
        "  ipv4;",
        f"  route {pod_subnet} blackhole;",
        "}",
        "",
        "filter podlab_bgp_out {",
        '  if proto = "pods" then accept;',
        *(
            ["  if source = RTS_BGP then { if bgp_path.len = 0 then accept; }"]
            if routers
            else ["  if source = RTS_BGP then accept;"]
        ),
        "  reject;",
        "}",
    ]
    if routers:
        lines += _fabric(router_id, asn, routers, cluster_cidr)
    for p in peers:
        lines += [
            "",
            f"protocol bgp {p.protocol} {{",
            f"  local {router_id} as {asn};",
            f"  neighbor {p.address} as {asn};",
            f"  keepalive time {KEEPALIVE_S};",
            f"  hold time {HOLD_S};",
            f"  connect retry time {CONNECT_RETRY_S};",
            "  error wait time 1, 10;",
            "  multihop;" if p.multihop else "  direct;",
        ]
        if p.rr_client:
            lines.append("  rr client;")
            if cluster_id is not None:
                lines.append(f"  rr cluster id {cluster_id};")
        lines += [
            "  ipv4 {",
            "    import all;",
            "    export filter podlab_bgp_out;",
            "  };",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _fabric(
    router_id: ipaddress.IPv4Address,
    asn: int,
    routers: list[RouterPeer],
    cluster_cidr: ipaddress.IPv4Network | None,
) -> list[str]:
    """The eBGP sessions with the lab's routers (native mesh)."""
    own = f"  if net ~ [ {cluster_cidr}+ ] then reject;" if cluster_cidr else "  # no own CIDR"
    lines = ["", "filter podlab_fabric_in {", own, "  accept;", "}"]
    for r in routers:
        lines += [
            "",
            f"protocol bgp {r.protocol} {{",
            f'  description "router {r.name}";',
            f"  local {router_id} as {asn};",
            f"  neighbor {r.address} as {r.asn};",
            f"  keepalive time {KEEPALIVE_S};",
            f"  hold time {HOLD_S};",
            f"  connect retry time {CONNECT_RETRY_S};",
            "  error wait time 1, 10;",
            "  direct;",
            "  ipv4 {",
            "    import filter podlab_fabric_in;",
            '    export where proto = "pods";',
            "  };",
            "}",
        ]
    return lines


# -- pure parsers ---------------------------------------------------------------

_PROTO_LINE = re.compile(
    r"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>up|down|start|stop|flush)"
    r"\s+(?P<since>\S+)\s*(?P<info>.*)$"
)


def parse_protocols(text: str) -> list[Session]:
    """Parse ``birdc show protocols`` (BIRD 2 table) into sessions; headers are skipped.

    BIRD's default time format gives ``since`` as one token (``21:04:01.357``, or a
    date once older than a day); ``info`` is the rest, e.g. ``Established`` or
    ``Active        Received: Administrative shutdown`` (spaces collapsed).
    """
    out = []
    for raw in text.splitlines():
        m = _PROTO_LINE.match(raw.rstrip())
        if not m or raw.startswith(("BIRD ", "Name ")):
            continue
        info = " ".join(m["info"].split())
        out.append(Session(m["name"], m["proto"], m["table"], m["state"], m["since"], info))
    return out


_ROUTE_HEAD = re.compile(
    r"^(?P<prefix>\d+\.\d+\.\d+\.\d+/\d+)\s+(?P<kind>\w+)\s+\[(?P<proto>\S+) [^\]]*\]"
    r"\s*(?P<primary>\*)?"
)
_VIA = re.compile(r"^\s+(?:via (?P<via>\d+\.\d+\.\d+\.\d+) on|dev) (?P<dev>\S+)")
_ALT = re.compile(r"^\s+(?P<kind>\w+)\s+\[(?P<proto>\S+) [^\]]*\]\s*(?P<primary>\*)?")


def parse_routes(text: str) -> list[BirdRoute]:
    """Parse ``birdc show route`` (BIRD 2.0) into routes, one per (prefix, protocol)."""
    out: list[BirdRoute] = []
    prefix: ipaddress.IPv4Network | None = None
    pending: dict[str, object] | None = None

    def flush() -> None:
        if pending is not None and prefix is not None:
            out.append(BirdRoute(prefix, **pending))  # type: ignore[arg-type]

    for line in text.splitlines():
        head, alt, via = _ROUTE_HEAD.match(line), _ALT.match(line), _VIA.match(line)
        if head:
            flush()
            prefix = ipaddress.IPv4Network(head["prefix"])
            pending = _route_fields(head)
        elif via and pending is not None:
            pending["via"] = ipaddress.IPv4Address(via["via"]) if via["via"] else None
            pending["dev"] = via["dev"]
        elif alt and prefix is not None:
            flush()
            pending = _route_fields(alt)
    flush()
    return out


def _route_fields(m: re.Match[str]) -> dict[str, object]:
    return {
        "kind": m["kind"],
        "protocol": m["proto"],
        "via": None,
        "dev": None,
        "primary": bool(m["primary"]),
    }


# -- the process and its control socket -------------------------------------------


class BirdError(Exception):
    """BIRD would not start, reload or answer; the message carries its own words."""


class Bird:
    """One node's BIRD: ``conf`` and ``pidfile`` under ``run_dir``, its control socket
    ``sock`` (the agent passes ``bird_socket``; default ``run_dir/bird.ctl``).

    ``netns`` runs bird/birdc inside a named namespace (tests); the agent already
    runs inside its node's namespace and leaves it None.
    """

    def __init__(self, run_dir: Path, netns: str | None = None, sock: Path | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.conf = self.run_dir / "bird.conf"
        self.sock = Path(sock) if sock else self.run_dir / "bird.ctl"
        self.pidfile = self.run_dir / "bird.pid"
        self.netns = netns

    def write_config(self, text: str) -> bool:
        """Write bird.conf atomically; True when it changed (and a reload is due)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.conf.exists() and self.conf.read_text() == text:
            return False
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(text)
        run(["bird", "-p", "-c", str(tmp)], timeout=10, netns=self.netns)  # parse check
        os.replace(tmp, self.conf)
        return True

    def pid(self) -> int | None:
        """BIRD's pid from its pid file, if that process is alive."""
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def start(self) -> int:
        """Start BIRD unless it already runs; returns its pid once the socket answers.

        A running BIRD without our socket (started by an agent that used another
        path) is restarted, since the agent could neither reload nor read it.
        """
        pid = self.pid()
        if pid is not None and self.sock.exists():
            return pid
        if pid is not None:
            log.info("bird pid %d has no socket at %s; restarting it", pid, self.sock)
            self.stop()
        self.pidfile.unlink(missing_ok=True)
        self.sock.parent.mkdir(parents=True, exist_ok=True)
        argv = ["bird", "-c", str(self.conf), "-s", str(self.sock), "-P", str(self.pidfile)]
        run(argv, timeout=START_TIMEOUT_S, netns=self.netns)  # forks into the background
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is not None and self.sock.exists():
                log.info("bird started (pid %d, socket %s)", pid, self.sock)
                return pid
            time.sleep(0.05)
        raise BirdError(f"bird did not come up within {START_TIMEOUT_S}s (socket {self.sock})")

    def birdc(self, *args: str, timeout: float = 10.0) -> str:
        """One ``birdc -s SOCK`` command; its output. birdc exits 1 on an error reply
        (unknown command, syntax error) or an unreachable socket: that raises BirdError."""
        try:
            res = run(["birdc", "-s", str(self.sock), *args], timeout=timeout, netns=self.netns)
        except ToolError as exc:
            raise BirdError(f"birdc {' '.join(args)}: {exc.output.strip()}") from exc
        return res.stdout

    def reload(self) -> None:
        """Apply a rewritten bird.conf without dropping established sessions."""
        out = self.birdc("configure")
        ok = ("Reconfigured", "Reconfiguration in progress", "unchanged")
        if not any(word in out for word in ok):
            raise BirdError(f"birdc configure: {out.strip()}")
        log.info("bird reconfigured: %s", out.strip().splitlines()[-1] if out.strip() else "")

    def protocols(self) -> list[Session]:
        return parse_protocols(self.birdc("show", "protocols"))

    def routes(self) -> list[BirdRoute]:
        return parse_routes(self.birdc("show", "route"))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop BIRD by its pid (SIGTERM, then SIGKILL); BIRD withdraws its kernel routes."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                return
            time.sleep(0.05)
        log.warning("bird pid %d ignored SIGTERM; killing", pid)
        os.kill(pid, signal.SIGKILL)
