"""`podlab validate`: check a topology file and show the plan it yields."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.plan.build import load_plan
from harness.plan.model import LabPlan


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``validate``."""
    p = sub.add_parser("validate", help="check a topology file and print its plan")
    p.add_argument("file", help="containerlab topology file")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_validate)
    p = sub.add_parser("export", help="write the lab as a file for another tool")
    p.add_argument("target", choices=("clab",), help="clab: a containerlab topology")
    p.add_argument("file", help="containerlab topology file (podlab's)")
    p.add_argument("-o", "--output", help="write to FILE instead of stdout")
    p.add_argument("--image", default=None, help="container image of every node")
    p.add_argument(
        "--no-services",
        action="store_true",
        help="leave out etcd, the agent and the controllers (deploy them with Ansible)",
    )
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    import yaml

    from harness.deploy.render import not_carried
    from harness.topology.export import DEFAULT_IMAGE, export_clab, image_needs

    class Dumper(yaml.SafeDumper):
        """Multi-line strings (the files written by exec) as YAML literal blocks."""

    def text_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text_block)
    plan = load_plan(args.file)
    doc = export_clab(plan, args.image or DEFAULT_IMAGE, services_too=not args.no_services)
    text = yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)
    header = f"# containerlab topology of podlab lab {plan.name} (podlab export clab)\n"
    if not args.no_services:
        needs = image_needs(plan)
        header += "".join(f"# the image must carry: {line}\n" for line in needs)
        for line in not_carried(plan):
            header += f"# not carried by this file: {line}\n"
            print(f"warning: not carried by the exported file: {line}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(header + text)
    else:
        print(header + text, end="")
    return 0


def _validate(args: argparse.Namespace) -> int:
    plan = load_plan(args.file)
    if args.format == "json":
        print(json.dumps(plan_summary(plan), indent=2))
    else:
        print_plan(plan, Console())
    return 0


def plan_summary(plan: LabPlan) -> dict:
    """A JSON-friendly view of the plan with stable keys."""
    return {
        "lab": plan.name,
        **({"clab_name": plan.clab_name} if plan.clab_name else {}),
        "regime": plan.regime,
        **(
            {"exec_order": list(plan.exec_order)}
            if list(plan.exec_order) != [n for n in plan.nodes if n not in plan.bridges]
            else {}
        ),
        "mgmt_subnet": str(plan.mgmt_subnet),
        "clusters": {
            c.name: {
                "id": c.id,
                "pod_cidr": str(c.pod_cidr),
                "service_cidr": str(c.service_cidr),
                "mode": c.mode,
                "encryption": c.encryption,
                "proxy_mode": c.proxy_mode,
                "control_plane": c.control_plane,
                "nodes": list(c.nodes),
                **({"mesh": c.mesh, "mesh_routing": c.mesh_routing} if c.mesh else {}),
            }
            for c in plan.clusters.values()
        },
        "segments": {
            s.name: {
                "kind": s.kind,
                "subnet": str(s.subnet) if s.subnet else None,
                "mtu": s.mtu,
                "members": [f"{n}:{i}" for n, i in s.members],
            }
            for s in plan.segments.values()
        },
        "nodes": {
            n.name: {
                **({"clab_name": n.clab_name} if n.clab_name else {}),
                "role": n.role,
                "cluster": n.cluster,
                "mgmt": str(n.mgmt),
                "interfaces": {
                    i.name: {
                        "segment": i.segment,
                        "address": str(i.address) if i.address else None,
                        "mtu": i.mtu,
                    }
                    for i in n.interfaces
                },
                "routes": [f"{r.dest} via {r.via} dev {r.dev}" for r in n.routes],
                **({"exec": list(n.exec)} if n.exec else {}),
                **({"exec_delay": n.exec_delay} if n.exec_delay else {}),
                **({"env": dict(n.env)} if n.env else {}),
                **(
                    {"binds": [f"{s}:{d}{':ro' if ro else ''}" for s, d, ro in n.binds]}
                    if n.binds
                    else {}
                ),
            }
            for n in plan.nodes.values()
        },
    }


REGIME_LINES = {
    "containerlab": "plain containerlab file (no podlab.* label): plain hosts, only the "
    "addresses its links' ipv4: and exec: give",
    "podlab": "podlab lab (podlab.* labels): roles, clusters and podlab's address plan",
}


def print_plan(plan: LabPlan, console: Console) -> None:
    """Human summary: clusters, segments, nodes with their addresses."""
    console.print(
        f"[bold]{plan.name}[/]: {plan.source} is valid — {len(plan.nodes)} nodes, "
        f"{len(plan.segments)} segments, {len(plan.clusters)} clusters; "
        f"management {plan.mgmt_subnet}"
    )
    console.print(f"regime: {REGIME_LINES[plan.regime]}", highlight=False)
    if plan.clab_name:
        console.print(
            f"lab name {plan.clab_name} runs as {plan.name} (namespaces, status, down)",
            highlight=False,
        )
    if plan.clusters:
        _clusters_table(plan, console)
    _segments_and_nodes(plan, console)
    with_exec = [plan.nodes[n] for n in plan.exec_order if plan.nodes[n].exec]
    if any(n.exec_delay for n in with_exec) or [n.name for n in with_exec] != [
        n.name for n in plan.nodes.values() if n.exec
    ]:  # wait-for or startup-delay changed the order: say it
        steps = [
            n.shown + (f" (after {n.exec_delay} s)" if n.exec_delay else "") for n in with_exec
        ]
        console.print(f"exec order: {', '.join(steps)}", highlight=False)


def _clusters_table(plan: LabPlan, console: Console) -> None:
    t = Table(
        "cluster",
        "id",
        "mode",
        "encryption",
        "pod CIDR",
        "service CIDR",
        "control plane",
        "nodes",
        "mesh",
        title="clusters",
        title_justify="left",
    )
    for c in plan.clusters.values():
        t.add_row(
            c.name,
            str(c.id),
            c.mode,
            c.encryption,
            str(c.pod_cidr),
            str(c.service_cidr),
            c.control_plane,
            str(len(c.nodes)),
            f"{c.mesh} ({c.mesh_routing})" if c.mesh else "-",
        )
    console.print(t)


def _segments_and_nodes(plan: LabPlan, console: Console) -> None:
    t = Table("segment", "kind", "subnet", "MTU", "members", title="segments", title_justify="left")
    for s in plan.segments.values():
        t.add_row(
            s.name,
            s.kind,
            str(s.subnet or "-"),
            str(s.mtu),
            ", ".join(f"{n}:{i}" for n, i in s.members),
        )
    console.print(t)
    t = Table(
        "node", "role", "cluster", "mgmt", "underlay", "routes", title="nodes", title_justify="left"
    )
    for n in plan.nodes.values():
        t.add_row(
            n.shown,
            n.role,
            n.cluster or "-",
            str(n.mgmt.ip),
            ", ".join(f"{i.name} {i.address or '(no address)'}" for i in n.interfaces) or "-",
            "; ".join(f"{r.dest} via {r.via}" for r in n.routes) or "-",
        )
    console.print(t)
