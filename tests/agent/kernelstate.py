"""What the agent made in one node namespace and its pods, as a set that two nodes can share.

Mode-switch tests compare a switched node with a fresh one, so this reads
everything podlab could leave behind — links, addresses, routes, permanent
neighbours and VXLAN FDB entries, nftables tables and chains, WireGuard
interfaces and peers, long-running processes in the node's namespace, the
agent's run dir, and inside each pod its links, addresses, routes and
neighbours — and writes it as plain tuples. Values that differ between two
equally correct nodes without meaning anything (a veth's random MAC, a pod's
address, a peer's public key) are replaced by tokens naming what they stand
for (``MAC:cali…``, ``POD:a``, ``KEY:n2``). The lab's own underlay (``eth1``,
its connected and static routes) is not the agent's and is left out.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from harness.exec import run

Obj = tuple[Any, ...]
UNDERLAY = "eth1"
LAB_PROTOS = {2, 3}  # kernel, boot: connected and static routes the lab itself made
NUD_PERMANENT = 0x80
IFF_UP = 1


def _attr(msg: Any, name: str, default: Any = None) -> Any:
    value = msg.get_attr(name)
    return default if value is None else value


class Tokens:
    """Concrete value → the token that names it (applied to every field)."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values = dict(values or {})

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.values.get(value, value)
        return value


def _links(ipr: IPRoute) -> dict[int, Any]:
    return {m["index"]: m for m in ipr.get_links()}


def _netns_objects(ipr: IPRoute, tok: Tokens, where: str, skip: set[str]) -> set[Obj]:
    links = _links(ipr)
    names = {i: str(_attr(m, "IFLA_IFNAME")) for i, m in links.items()}
    out: set[Obj] = set()
    for idx, m in links.items():
        name = names[idx]
        if name in skip:
            continue
        info = m.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        master = names.get(_attr(m, "IFLA_MASTER", 0))
        up = bool(m["flags"] & IFF_UP)
        out.add((where, "link", name, kind, _attr(m, "IFLA_MTU"), up, master))
    for a in ipr.get_addr(family=2):
        name = names.get(a["index"], "?")
        if name not in skip:
            out.add((where, "addr", name, tok(_attr(a, "IFA_ADDRESS")), a["prefixlen"]))
    for table in (254, 255):
        for r in ipr.get_routes(family=2, table=table):
            if r.get_attr("RTA_TABLE") not in (None, table):
                continue
            dev = names.get(_attr(r, "RTA_OIF", 0))
            if r["proto"] == 2 and table == 255:
                continue  # the kernel's local routes mirror the addresses
            if dev in skip and r["proto"] in LAB_PROTOS:
                continue
            dst = tok(_attr(r, "RTA_DST", "0.0.0.0"))
            out.add((where, "route", table, dst, r["dst_len"], tok(_attr(r, "RTA_GATEWAY")),
                     dev, r["proto"], r["scope"], r["type"], bool(r["flags"] & 4)))  # fmt: skip
    for n in ipr.get_neighbours(family=2):
        if n["state"] & NUD_PERMANENT:
            dev = names.get(n["ifindex"])
            out.add((where, "neigh", dev, tok(_attr(n, "NDA_DST")),
                     tok(str(_attr(n, "NDA_LLADDR", "")))))  # fmt: skip
    for f in ipr.fdb("dump"):
        if _attr(f, "NDA_DST"):
            dev = names.get(f["ifindex"])
            out.add((where, "fdb", dev, tok(str(_attr(f, "NDA_LLADDR"))), _attr(f, "NDA_DST")))
    return out


def macs(path: str, prefix: str = "") -> dict[str, str]:
    """Every link's MAC in a namespace → ``MAC:<prefix><name>``."""
    with IPRoute(netns=path) as ipr:
        return {
            str(_attr(m, "IFLA_ADDRESS")): f"MAC:{prefix}{_attr(m, 'IFLA_IFNAME')}"
            for m in ipr.get_links()
            if _attr(m, "IFLA_ADDRESS") not in (None, "00:00:00:00:00:00")
        }


def _nft(ns_path: str) -> set[Obj]:
    res = run(["nsenter", f"--net={ns_path}", "nft", "-j", "list", "ruleset"], timeout=15)
    items = json.loads(res.stdout).get("nftables", [])
    rules: dict[tuple[str, str, str], int] = {}
    out: set[Obj] = set()
    for it in items:
        if "table" in it:
            out.add(("node", "nft-table", it["table"]["family"], it["table"]["name"]))
        elif "chain" in it:
            c = it["chain"]
            rules.setdefault((c["family"], c["table"], c["name"]), 0)
        elif "rule" in it:
            r = it["rule"]
            key = (r["family"], r["table"], r["chain"])
            rules[key] = rules.get(key, 0) + 1
    out |= {("node", "nft-chain", *key, n) for key, n in rules.items()}
    return out


def _wireguard(ns_path: str, names: Iterable[str], tok: Tokens) -> set[Obj]:
    out: set[Obj] = set()
    for name in names:
        res = run(["nsenter", f"--net={ns_path}", "wg", "show", name, "dump"], 15, check=False)
        lines = [ln.split("\t") for ln in res.stdout.splitlines() if ln.strip()]
        if res.returncode != 0 or not lines:
            out.add(("node", "wg", name, "unreadable", res.stderr.strip()[:80]))
            continue
        out.add(("node", "wg", name, "listen-port", lines[0][2]))
        for f in lines[1:]:
            out.add(("node", "wg-peer", name, tok(f[0]), f[2], f[3]))
    return out


def _processes(ns_path: str, exclude: set[int]) -> set[Obj]:
    """Long-running processes in the node namespace (seen twice, 0.5 s apart)."""

    def sample() -> dict[int, str]:
        ino = os.stat(ns_path).st_ino
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in exclude:
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino != ino:
                    continue
                found[int(entry)] = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
        return found

    first = sample()
    time.sleep(0.5)
    second = sample()
    return {("node", "process", comm) for pid, comm in second.items() if first.get(pid) == comm}


def snapshot(
    node_ns: str,
    run_dir: Path,
    pods: dict[str, str],
    tokens: dict[str, str],
    exclude_pids: set[int],
) -> frozenset[Obj]:
    """The node's podlab-made objects; ``pods`` maps pod name → its netns path."""
    ns_path = f"/run/netns/{node_ns}"
    tok = Tokens({**tokens, **macs(ns_path)})
    for name, path in pods.items():
        tok.values.update(macs(path, prefix=f"{name}/"))
    with IPRoute(netns=node_ns) as ipr:
        objs = _netns_objects(ipr, tok, "node", {"lo", UNDERLAY})
        wg = [str(_attr(m, "IFLA_IFNAME")) for m in ipr.get_links()
              if str(_attr(m, "IFLA_IFNAME")).startswith("wg-")]  # fmt: skip
    for name, path in pods.items():
        with IPRoute(netns=path) as ipr:
            objs |= _netns_objects(ipr, tok, f"pod {name}", {"lo"})
    objs |= _nft(ns_path)
    objs |= _wireguard(ns_path, wg, tok)
    objs |= _processes(ns_path, exclude_pids)
    if run_dir.is_dir():
        objs |= {("node", "run-dir", p.name) for p in run_dir.iterdir()}
    return frozenset(objs)


def describe(objs: Iterable[Obj]) -> str:
    """One object per line, sorted, for an assertion message."""
    return "\n".join("  " + " ".join(str(x) for x in o) for o in sorted(objs, key=str))
