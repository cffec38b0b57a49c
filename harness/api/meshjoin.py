"""``podlab mesh join`` / ``podlab mesh leave``: clusters of two separate labs in one mesh.

Within one lab the deploy tells every syncer its peers. Across labs (each its own
``podlab up`` and ``podlab deploy``, the second deployed with ``--mesh-ca`` of the
first) nothing does: ``join LAB PEER`` exchanges what a syncer needs — the
peer clusters' export etcd endpoints, one file per peer in each control plane's
``/etc/podlab/mesh/remotes/`` — after checking, from every cluster's own
``clusterinfo``, the mesh rules (``harness.mesh.membership``: names, ids, pod
CIDRs, routing, encryption) and that both labs trust the same mesh CA. A refusal
is one line per problem, naming the object and the fix, and nothing is changed.

Two netns labs are separate sets of namespaces: ``--link RA:RB`` (the default
when each lab has one router) joins their underlays with a veth pair between two
routers and static routes (``harness.lab.joinlink``). Labs of other backends
(VMs, machines) must have connected underlays already. Native meshes (bgp) also
get an eBGP session between the two routers (``/etc/podlab/bird.d/``).

Each step is recorded in ``<lab dir>/mesh/joins/<peer>.json`` of both labs as it
is made; a join that fails (a peer unreachable, refused by a syncer, not
connected in time) is undone from that record, and ``leave`` undoes a join the
same way: remotes files removed, mirrors gone (the syncers delete them), BGP
session, routes and link removed.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from harness.errors import LabError, Problem, ToolError, UserError
from harness.exec import run
from harness.lab import joinlink
from harness.lab.state import LabPaths, Ledger, find
from harness.mesh import keys
from harness.mesh.membership import refusal
from harness.store import Store, StoreError

REMOTES_DIR = "/etc/podlab/mesh/remotes"
BIRD_JOIN_DIR = "/etc/podlab/bird.d"
CONNECT_TIMEOUT_S = 90.0
MIRROR_GONE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Member:
    """A meshed cluster of one lab, and its ``clusterinfo`` (None before a deploy)."""

    lab: str
    name: str
    mesh: str
    control_plane: str
    etcd: str
    info: dict[str, Any] | None


@dataclass
class Side:
    """One lab as join sees it: its meshed clusters, routers, nodes and namespaces."""

    lab: str
    paths: LabPaths
    backend: str
    members: dict[str, Member]
    routers: dict[str, dict[str, Any]]  # router -> host vars
    nodes: list[str]  # cluster nodes and routers (what routes to the peer lab)
    netns: dict[str, str] = field(default_factory=dict)

    def ssh(self, node: str, script: str, input: str | None = None) -> str:
        # ssh hands the one string to the node's shell as it is
        argv = ["ssh", "-F", str(self.paths.ssh_config), node, "--", script]
        return run(argv, timeout=30, input=input).stdout

    def record_path(self, peer: str) -> Path:
        return self.paths.root / "mesh" / "joins" / f"{peer}.json"


def _refused(lines: list[str]) -> UserError:
    """One problem per line (each already names the object and the fix)."""
    return UserError([Problem(file="", where="", message=line) for line in lines])


def load_side(lab: str, home: Path) -> Side:
    """What ``podlab up`` and ``podlab deploy`` left of ``lab``; UserError if it is not up."""
    paths = find(lab)
    if not paths.state.is_file():
        raise UserError(f"lab {lab}: not up here (fix: podlab up it, then podlab deploy)")
    ledger = Ledger.load(paths)
    inv = Path(ledger.inventory) if ledger.inventory else home / "inventories" / f"{lab}.yml"
    if not inv.is_file():
        raise UserError(f"lab {lab}: no inventory at {inv} (fix: podlab up it again)")
    data = yaml.safe_load(inv.read_text()) or {}
    top = data.get("all", {})
    members: dict[str, Member] = {}
    routers: dict[str, dict[str, Any]] = {}
    nodes: list[str] = []
    for gname, group in (top.get("children") or {}).items():
        gvars, hosts = (group or {}).get("vars") or {}, (group or {}).get("hosts") or {}
        if gname == "routers":
            routers.update({h: dict(v or {}) for h, v in hosts.items()})
        if not gvars.get("podlab_cluster"):
            continue
        nodes += list(hosts)
        if not gvars.get("podlab_mesh"):
            continue
        cp = next(h for h, v in hosts.items() if (v or {}).get("podlab_role") == "control-plane")
        name = str(gvars["podlab_cluster"])
        etcd = str(gvars.get("podlab_etcd_client_endpoint") or "")
        members[name] = Member(lab, name, str(gvars["podlab_mesh"]), cp, etcd, _info(name, etcd))
    side = Side(lab, paths, str((top.get("vars") or {}).get("podlab_backend") or "ssh"),
                members, routers, sorted(set(nodes) | set(routers)))  # fmt: skip
    if side.backend == "netns":
        side.netns = {n: s.netns for n, s in ledger.nodes.items()}
    return side


def _info(cluster: str, etcd: str) -> dict[str, Any] | None:
    try:
        kv = Store([etcd], timeout=3).get(keys.clusterinfo_key(cluster))
        return json.loads(kv.value) if kv else None
    except (StoreError, OSError, ValueError):
        return None


# -- the checks, before anything is changed ---------------------------------------------------
def pairs(a: Side, b: Side) -> list[tuple[Member, Member]]:
    """Every (cluster of A, cluster of B) in a mesh of the same name."""
    return [(x, y) for x in a.members.values() for y in b.members.values() if x.mesh == y.mesh]


def problems(a: Side, b: Side) -> list[str]:
    """Why A and B cannot join, one line each (empty: they can)."""
    if a.lab == b.lab:
        return [f"lab {a.lab}: a lab cannot join itself (fix: name another lab)"]
    out: list[str] = []
    for side in (a, b):
        out += [
            f"cluster {m.name} of lab {side.lab} publishes no clusterinfo (fix: podlab deploy "
            f"{side.lab}, so that its podlab-mesh runs)"
            for m in side.members.values()
            if m.info is None
        ]
    found = pairs(a, b)
    if not found:
        ma = sorted({m.mesh for m in a.members.values()}) or ["none"]
        mb = sorted({m.mesh for m in b.members.values()}) or ["none"]
        out.append(
            f"labs {a.lab} (meshes {', '.join(ma)}) and {b.lab} (meshes {', '.join(mb)}) share "
            "no mesh (fix: give the clusters to join the same podlab.mesh label)"
        )
    for x, y in found:
        if x.info is None or y.info is None:
            continue
        if x.info.get("caFingerprint") != y.info.get("caFingerprint"):
            ca = a.paths.root / "mesh" / x.mesh
            out.append(
                f"cluster {y.name} of lab {b.lab} trusts another mesh CA than lab {a.lab}'s "
                f"mesh {x.mesh} (fix: podlab deploy {b.lab} --mesh-ca {ca})"
            )
        others = {m.name: m.info for m in a.members.values() if m.mesh == x.mesh and m is not x}
        others.update(
            {m.name: m.info for m in b.members.values() if m.mesh == y.mesh and m is not y}
        )
        same_ca = {**y.info, "caFingerprint": x.info.get("caFingerprint")}  # said above
        why = refusal(x.info, y.name, same_ca, {k: v for k, v in others.items() if v})
        if why:
            out.append(f"lab {b.lab} cannot join lab {a.lab}: {why}")
    if a.backend != b.backend and "netns" in (a.backend, b.backend):
        out.append(
            f"lab {a.lab} ({a.backend}) and lab {b.lab} ({b.backend}): a netns lab's underlay "
            "reaches no other backend's (fix: join labs of one backend)"
        )
    return list(dict.fromkeys(out))


def _native(found: list[tuple[Member, Member]]) -> bool:
    return any((x.info or {}).get("routing") == "native" for x, _ in found)


# -- the record: each step as it is made, so a failure (or leave) undoes exactly that -----
@dataclass
class Record:
    lab: str
    peer: str
    state: str = "joining"
    link: dict[str, str] | None = None  # netns, ifname, subnet
    routes: dict[str, list[str]] = field(default_factory=dict)  # netns -> destinations
    remotes: dict[str, list[str]] = field(default_factory=dict)  # node -> files
    bird: dict[str, str] = field(default_factory=dict)  # router -> file
    peers: dict[str, list[str]] = field(default_factory=dict)  # our cluster -> its peers

    def save(self, side: Side) -> None:
        path = side.record_path(self.peer)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1, sort_keys=True))
        tmp.replace(path)

    @classmethod
    def load(cls, side: Side, peer: str) -> Record | None:
        try:
            return cls(**json.loads(side.record_path(peer).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise LabError(f"{side.record_path(peer)}: unreadable join record: {exc}") from exc


def _link_routers(a: Side, b: Side, link: str | None) -> tuple[str, str]:
    if link:
        ra, sep, rb = link.partition(":")
        bad = [f"{r} is not a router of lab {s.lab}" for r, s in ((ra, a), (rb, b))
               if r not in s.routers]  # fmt: skip
        if not sep or bad:
            raise UserError(
                f"--link {link}: {'; '.join(bad) or 'want ROUTER_A:ROUTER_B'} (fix: name a "
                f"router of {a.lab} ({', '.join(a.routers) or 'none'}) and one of {b.lab} "
                f"({', '.join(b.routers) or 'none'}))"
            )
        return ra, rb
    for s in (a, b):
        if len(s.routers) != 1:
            raise UserError(
                f"lab {s.lab} has {len(s.routers) or 'no'} routers "
                f"({', '.join(s.routers) or 'none'}): the join link needs one per lab "
                "(fix: --link ROUTER_A:ROUTER_B, after adding a podlab.role: router if none)"
            )
    return next(iter(a.routers)), next(iter(b.routers))


def _connect_underlays(a: Side, b: Side, ra: str, rb: str, subnet: str | None,
                       rec_a: Record, rec_b: Record) -> tuple[str, str]:  # fmt: skip
    """The veth between ``ra`` and ``rb`` and the routes of both labs through it;
    returns the two routers' link addresses."""
    sub_a = joinlink.underlay_subnets(a.netns[ra])
    sub_b = joinlink.underlay_subnets(b.netns[rb])
    clash = [f"{x} ({a.lab}) overlaps {y} ({b.lab})" for x in sub_a for y in sub_b
             if x.overlaps(y)]  # fmt: skip
    if clash:
        raise UserError(
            f"underlays of labs {a.lab} and {b.lab} overlap: {'; '.join(clash)} (fix: give one "
            "lab other underlay addresses, e.g. its router links' ipv4 in the topology)"
        )
    net = ipaddress.IPv4Network(subnet) if subnet else joinlink.free_subnet(sub_a + sub_b)
    names = (joinlink.link_name(b.lab), joinlink.link_name(a.lab))
    rec_a.link = {"netns": a.netns[ra], "ifname": names[0], "subnet": str(net)}
    rec_b.link = {"netns": b.netns[rb], "ifname": names[1], "subnet": str(net)}
    rec_a.save(a)
    rec_b.save(b)
    mtu = int(a.routers[ra].get("podlab_underlay_mtu") or 1500)
    ia, ib = joinlink.build(
        (a.netns[ra], names[0], a.lab), (b.netns[rb], names[1], b.lab), net, mtu
    )
    for side, rec, router, link_if, via, dests in (
        (a, rec_a, ra, names[0], str(ib.ip), sub_b),
        (b, rec_b, rb, names[1], str(ia.ip), sub_a),
    ):
        want = [str(d) for d in dests]
        rec.routes[side.netns[router]] = want
        rec.save(side)
        joinlink.add_routes(side.netns[router], want, via, link_if)
        toward = ipaddress.IPv4Address(str(side.routers[router]["podlab_underlay_address"]))
        for node in side.nodes:
            if node == router or node not in side.netns:
                continue
            gw, dev = joinlink.next_hop(side.netns[node], toward)
            rec.routes[side.netns[node]] = want
            rec.save(side)
            joinlink.add_routes(side.netns[node], want, gw, dev)
    return str(ia.ip), str(ib.ip)


def _endpoint(m: Member) -> str:
    return str((m.info or {}).get("exportEndpoint") or "")


_PROBE = (
    "python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)'"
)


def _unreachable(a: Side, b: Side, found: list[tuple[Member, Member]]) -> list[str]:
    out = []
    for (src_side, src), (dst_side, dst) in [((a, x), (b, y)) for x, y in found] + [
        ((b, y), (a, x)) for x, y in found
    ]:
        url = urlsplit(_endpoint(dst))
        try:
            src_side.ssh(src.control_plane, f"{_PROBE} {url.hostname} {url.port}")
        except ToolError:
            out.append(
                f"cluster {dst.name}'s export etcd {_endpoint(dst)} (lab {dst_side.lab}) is not "
                f"reachable from {src.control_plane} (lab {src_side.lab}) (fix: connect the "
                "labs' underlays; two netns labs: --link ROUTER_A:ROUTER_B)"
            )
    return list(dict.fromkeys(out))


def _bird_session(
    side: Side, router: str, peer: Side, peer_router: str, peer_ip: str, rec: Record
) -> None:
    """eBGP (iBGP when the two routers' ASes happen to be equal) with the other lab's
    router over the link: its meshed pod CIDRs in, ours out; next hop = ourselves."""
    mine = sorted({str(m.info["podCIDR"]) for m in side.members.values() if m.info})
    theirs = sorted({str(m.info["podCIDR"]) for m in peer.members.values() if m.info})
    own_as = int(side.routers[router].get("podlab_bgp", {}).get("as", 65000))
    peer_as = int(peer.routers[peer_router].get("podlab_bgp", {}).get("as", 65000))
    text = "\n".join([
        f"# Written by `podlab mesh join`: router {peer_router} of lab {peer.lab}; "
        "`podlab mesh leave` removes it.",
        f"protocol bgp join_{joinlink.link_name(peer.lab)} {{",
        f'  description "lab {peer.lab} router {peer_router}";',
        f"  local as {own_as};",
        f"  neighbor {peer_ip} as {peer_as};",
        "  direct;",
        "  keepalive time 1;",
        "  hold time 3;",
        "  connect retry time 1;",
        "  error wait time 1, 10;",
        "  ipv4 {",
        "    next hop self;",
        f"    import where net ~ [ {', '.join(c + '+' for c in theirs)} ];",
        f"    export where source = RTS_BGP && net ~ [ {', '.join(c + '+' for c in mine)} ];",
        "  };",
        "}",
        "",
    ])  # fmt: skip
    path = f"{BIRD_JOIN_DIR}/join-{peer.lab}.conf"
    rec.bird[router] = path
    rec.save(side)
    side.ssh(router, f"mkdir -p {BIRD_JOIN_DIR} && cat > {path} && birdc configure", input=text)


def _write_remotes(a: Side, b: Side, found: list[tuple[Member, Member]],
                   rec_a: Record, rec_b: Record) -> None:  # fmt: skip
    for side, rec, mine, peer in [(a, rec_a, x, y) for x, y in found] + [
        (b, rec_b, y, x) for x, y in found
    ]:
        path = f"{REMOTES_DIR}/{peer.name}.yaml"
        text = (
            f"# Written by `podlab mesh join {a.lab} {b.lab}`; `podlab mesh leave` removes it.\n"
            f"endpoints: [{_endpoint(peer)}]\n"
        )
        rec.remotes.setdefault(mine.control_plane, []).append(path)
        rec.peers.setdefault(mine.name, []).append(peer.name)
        rec.save(side)
        side.ssh(mine.control_plane, f"mkdir -p {REMOTES_DIR} && cat > {path}", input=text)


def _peer_state(m: Member, peer: str) -> dict[str, Any]:
    try:
        kv = Store([m.etcd], timeout=3).get(keys.status_key(m.name, peer))
        return json.loads(kv.value) if kv else {}
    except (StoreError, OSError, ValueError):
        return {}


def _wait_connected(found: list[tuple[Member, Member]], timeout: float) -> list[str]:
    """Until every cluster sees every peer connected; the problems otherwise."""
    views = [(x, y) for x, y in found] + [(y, x) for x, y in found]
    deadline = time.monotonic() + timeout
    while True:
        states = {(m.name, p.name): _peer_state(m, p.name) for m, p in views}
        refused = [
            f"cluster {m} refuses {p}: {st.get('lastError')}"
            for (m, p), st in states.items()
            if st.get("state") == "refused"
        ]
        if refused:
            return refused
        if all(st.get("state") == "connected" for st in states.values()):
            return []
        if time.monotonic() > deadline:
            return [
                f"cluster {m} sees {p} {st.get('state', 'not yet')} after {timeout:.0f} s"
                f"{': ' + str(st.get('lastError')) if st.get('lastError') else ''}"
                for (m, p), st in states.items()
                if st.get("state") != "connected"
            ]
        time.sleep(1.0)


def join(
    lab: str,
    peer: str,
    home: Path,
    link: str | None = None,
    subnet: str | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
    say: Callable[[str], None] = print,
) -> None:
    """Join the meshed clusters of ``lab`` and ``peer``; undo everything on failure."""
    a, b = load_side(lab, home), load_side(peer, home)
    bad = problems(a, b)
    if bad:
        raise _refused(bad)
    for side, other in ((a, b), (b, a)):
        if Record.load(side, other.lab) is not None:
            raise UserError(
                f"lab {side.lab} is already joined with lab {other.lab} (fix: podlab mesh leave "
                f"{side.lab} {other.lab} first)"
            )
    found = pairs(a, b)
    native = _native(found)
    linked = a.backend == "netns"
    if native and not linked:
        raise UserError(
            f"mesh {found[0][0].mesh} routes natively (bgp): joining it across labs needs a BGP "
            "session between the labs' routers, built only for netns labs (fix: use a tunnel "
            "mode, or netns labs)"
        )
    if link and not linked:
        raise UserError(f"--link: only netns labs get a join link ({lab} is {a.backend})")
    rec_a, rec_b = Record(a.lab, b.lab), Record(b.lab, a.lab)
    rec_a.save(a)
    rec_b.save(b)
    try:
        if linked:
            ra, rb = _link_routers(a, b, link)
            ia, ib = _connect_underlays(a, b, ra, rb, subnet, rec_a, rec_b)
            say(f"link: {a.lab}/{ra} {ia} ↔ {b.lab}/{rb} {ib}")
            if native:
                _bird_session(a, ra, b, rb, ib, rec_a)
                _bird_session(b, rb, a, ra, ia, rec_b)
        bad = _unreachable(a, b, found)
        if bad:
            raise _refused(bad)
        _write_remotes(a, b, found, rec_a, rec_b)
        bad = _wait_connected(found, timeout)
        if bad:
            raise _refused(bad)
    except BaseException:
        say(f"join of {a.lab} and {b.lab} failed: undoing what was done")
        _undo(a, rec_a)
        _undo(b, rec_b)
        raise
    rec_a.state = rec_b.state = "joined"
    rec_a.save(a)
    rec_b.save(b)
    for x, y in found:
        say(f"joined: {x.name} ({a.lab}) ↔ {y.name} ({b.lab}) in mesh {x.mesh}, connected")


def _mirrors_gone(side: Side, rec: Record, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for cluster, peers in rec.peers.items():
        m = side.members.get(cluster)
        if m is None:
            continue
        for p in peers:
            prefix = keys.remote_prefix(cluster, p)
            while True:
                try:
                    left = Store([m.etcd], timeout=3).get_prefix(prefix)[0]
                except (StoreError, OSError):
                    break  # its etcd is gone: so is the mirror's effect
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.5)


def _undo(side: Side, rec: Record) -> list[str]:
    """Undo a (partial) join on one side, from its record; what could not be undone."""
    left: list[str] = []
    for node, files in rec.remotes.items():
        try:
            side.ssh(node, "rm -f " + " ".join(files))
        except ToolError as exc:
            left.append(f"{node}: {' '.join(files)}: {exc}")
    _mirrors_gone(side, rec, MIRROR_GONE_TIMEOUT_S)
    for router, path in rec.bird.items():
        try:
            side.ssh(router, f"rm -f {path} && birdc configure")
        except ToolError as exc:
            left.append(f"{router}: {path}: {exc}")
    for netns, dests in rec.routes.items():
        joinlink.delete_routes(netns, dests)
    if rec.link:
        joinlink.delete(rec.link["netns"], rec.link["ifname"])
    side.record_path(rec.peer).unlink(missing_ok=True)
    return left


def leave(lab: str, peer: str, home: Path, say: Callable[[str], None] = print) -> None:
    """Undo ``join lab peer`` on both sides (only ``lab``'s when ``peer`` is gone)."""
    a = load_side(lab, home)
    rec_a = Record.load(a, peer)
    if rec_a is None:
        raise UserError(
            f"lab {lab} is not joined with lab {peer} (fix: podlab mesh status {lab} lists "
            "its peers)"
        )
    try:
        b: Side | None = load_side(peer, home)
    except UserError:
        b = None
    left = _undo(a, rec_a)
    rec_b = Record.load(b, lab) if b is not None else None
    if b is not None and rec_b is not None:
        left += _undo(b, rec_b)
    else:
        say(f"lab {peer} is not up: only lab {lab}'s side was undone")
    if left:
        raise LabError("leave could not undo: " + "; ".join(left))
    say(f"left: labs {lab} and {peer} no longer share a mesh")
