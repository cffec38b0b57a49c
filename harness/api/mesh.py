"""``podlab mesh status``: each cluster's view of the other clusters of its mesh
(``mesh join``/``mesh leave`` of two labs: ``harness.api.meshjoin``).

Reads, from every cluster's own etcd (as ``podlab get`` does), the records its
syncer writes: ``clusterinfo`` and ``mesh/<peer>/status`` (docs/etcd-layout.md).
Nothing here talks to an export etcd: what a cluster sees is what its agents see.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.api import output
from harness.api.target import cluster_endpoints, cluster_vars, labs_up, podlab_home
from harness.errors import UserError
from harness.mesh import keys
from harness.store import Store, StoreError

MESH_VAR = "podlab_mesh"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``mesh status``, ``mesh join`` and ``mesh leave``."""
    p = sub.add_parser("mesh", help="the cluster mesh: each cluster's view of the others")
    verbs = p.add_subparsers(dest="mesh_verb", metavar="VERB", required=True)
    s = verbs.add_parser("status", help="connected or not, since when, what each cluster sees")
    s.add_argument("lab", nargs="?", help="lab name (default: the only lab up)")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(func=_status)
    j = verbs.add_parser(
        "join",
        help="join the meshed clusters of two labs (each its own podlab up) into their mesh",
    )
    j.add_argument("lab", help="a lab that is up and deployed")
    j.add_argument("peer", help="the other lab (deployed with --mesh-ca of the first)")
    j.add_argument(
        "--link",
        metavar="ROUTER:PEER_ROUTER",
        help="netns labs: the two routers to connect (default: each lab's only router)",
    )
    j.add_argument(
        "--link-subnet", metavar="CIDR", help="the link's subnet (default: a free /30 of 100.64/16)"
    )
    j.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for connected")
    j.set_defaults(func=_join)
    lv = verbs.add_parser("leave", help="undo `mesh join LAB PEER`: mirrors, routes and link go")
    lv.add_argument("lab")
    lv.add_argument("peer")
    lv.set_defaults(func=_leave)


def _join(args: argparse.Namespace) -> int:
    from harness.api import meshjoin

    meshjoin.join(args.lab, args.peer, podlab_home(), args.link, args.link_subnet, args.timeout)
    return 0


def _leave(args: argparse.Namespace) -> int:
    from harness.api import meshjoin

    meshjoin.leave(args.lab, args.peer, podlab_home())
    return 0


def _age(ts: str | None, now: datetime) -> str:
    if not ts:
        return "-"
    try:
        t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    s = max(0, int((now - t).total_seconds()))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def collect(lab: str, home: Path | None = None) -> dict[str, Any]:
    """``{"lab", "clusters": {name: {"mesh", "info", "peers": {peer: status}, "error"}}}``."""
    home = home or podlab_home()
    inv = home / "inventories" / f"{lab}.yml"
    endpoints = cluster_endpoints(inv)
    meshes = cluster_vars(inv, MESH_VAR)
    out: dict[str, Any] = {"lab": lab, "clusters": {}}
    for cluster, url in endpoints.items():
        entry: dict[str, Any] = {"mesh": meshes.get(cluster) or None, "peers": {}, "error": None}
        out["clusters"][cluster] = entry
        if not entry["mesh"]:
            continue
        try:
            store = Store([url], timeout=3)
            info = store.get(keys.clusterinfo_key(cluster))
            entry["info"] = json.loads(info.value) if info else None
            if info is None:
                entry["error"] = "no clusterinfo: podlab-mesh has not run (deploy the lab)"
            for e in store.get_prefix(keys.mesh_prefix(cluster))[0]:
                if e.key.endswith("/" + keys.STATUS):
                    st = json.loads(e.value)
                    entry["peers"][st.get("cluster", e.key.split("/")[-2])] = st
        except (StoreError, OSError, ValueError) as exc:
            entry["error"] = f"cannot read etcd at {url}: {exc}"
    return out


def _status(args: argparse.Namespace) -> int:
    home = podlab_home()
    lab = args.lab
    if lab is None:
        up = labs_up(home)
        if len(up) != 1:
            raise UserError(
                f"{'several labs are up: ' + ', '.join(up) if up else 'no lab is up'} "
                "(fix: name the lab: podlab mesh status LAB)"
            )
        lab = up[0]
    data = collect(lab, home)
    if args.format == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    now = datetime.now(UTC)
    # kubectl's habit: plain columns, never cut to a terminal's (or a pipe's 80) width
    rows: list[list[str]] = []
    for cluster, entry in data["clusters"].items():
        if not entry["mesh"]:
            rows.append([cluster, "-", "-", "not in a mesh", *["-"] * 6])
            continue
        if entry["error"] or not entry["peers"]:
            rows.append([cluster, entry["mesh"], "-", "no peers", *["-"] * 5, entry["error"] or ""])
        for peer, st in sorted(entry["peers"].items()):
            n = st.get("counts") or {}
            rows.append([
                cluster, entry["mesh"], peer, st.get("state", "?"), _age(st.get("since"), now),
                _age(st.get("lastSync"), now), str(n.get("nodes", 0)),
                str(n.get("services", 0)), str(n.get("endpoints", 0)), st.get("lastError") or "",
            ])  # fmt: skip
    header = ["CLUSTER", "MESH", "PEER", "STATE", "SINCE", "LAST SYNC", "NODES", "SERVICES",
              "ENDPOINTS", "LAST ERROR"]  # fmt: skip
    print(output.table(header, rows))
    return 0
