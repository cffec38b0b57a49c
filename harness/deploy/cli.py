"""`podlab deploy`: install the node components on a lab (or on VMs) with Ansible."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.deploy.deploy import deploy, parse_cluster_modes, request_for
from harness.deploy.progress import LiveProgress, recap_table
from harness.deploy.runner import DeployResult
from harness.errors import LabError
from harness.plan.model import ENCRYPTIONS, MODES, PROXY_MODES


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``deploy``."""
    p = sub.add_parser(
        "deploy",
        help="install etcd, the node agent and the controller manager on a lab's nodes "
        "(playbooks/site.yml)",
        description="Build podlab's wheelhouse and run playbooks/site.yml with ansible-runner "
        "against the lab's inventory (inventories/LAB.yml) or --inventory FILE.",
    )
    p.add_argument("lab", help="lab name (its event logs go to .podlab/LAB/deploy/)")
    p.add_argument("--inventory", "-i", metavar="FILE", help="deploy to the machines in FILE")
    p.add_argument(
        "--mode",
        metavar="MODE|CLUSTER=MODE,…",
        help=f"override the datapath mode: one of {', '.join(MODES)} for every cluster, or "
        "one per cluster, every cluster named (c1=vxlan,c2=udp: one Ansible run, each "
        "cluster's hosts in their mode; refused before anything changes if the lab's "
        "mesh rules forbid the mix, docs/mesh.md)",
    )
    p.add_argument("--encryption", choices=ENCRYPTIONS, help="override the encryption")
    p.add_argument("--proxy-mode", choices=PROXY_MODES, help="override the service proxy mode")
    p.add_argument("--limit", "-l", metavar="PATTERN", help="only these hosts (Ansible pattern)")
    p.add_argument("--forks", type=int, help="parallel hosts (default: every host at once)")
    p.add_argument(
        "--mesh-ca",
        metavar="DIR",
        help="join another lab's mesh: use the CA in DIR (.podlab/OTHER_LAB/mesh/MESH)",
    )
    p.add_argument(
        "--switch",
        action="store_true",
        help="only switch a deployed lab to --mode/--encryption: re-configure and restart "
        "the agents (pods kept) and the mode's routers, install nothing (playbooks/switch.yml)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no live progress, only the recap")
    p.set_defaults(func=_deploy)


def _deploy(args: argparse.Namespace) -> int:
    per_cluster = parse_cluster_modes(args.mode) if args.mode else None
    overrides = {
        "podlab_mode": args.mode,
        "podlab_encryption": args.encryption,
        "podlab_proxy_mode": args.proxy_mode,
    }
    req = request_for(args.lab, args.inventory, overrides, args.limit, switch=args.switch,
                      cluster_modes=per_cluster)  # fmt: skip
    if args.mesh_ca:
        req = dataclasses.replace(req, mesh_ca=Path(args.mesh_ca).resolve())
    console = Console(highlight=False)
    if args.quiet or not console.is_terminal:
        result = deploy(req, forks=args.forks)
    else:
        with LiveProgress(console) as progress:
            result = deploy(req, on_event=progress, forks=args.forks)
    console.print(recap_table(result))
    console.print(
        f"{len(result.hosts)} hosts, changed={result.changed}, "
        f"{result.duration_s:.1f}s in Ansible; event log: {escape(str(result.artifacts))}"
    )
    if not result.ok:
        raise LabError(_failure_text(result))
    return 0


def _failure_text(result: DeployResult) -> str:
    lines = [f"deploy failed ({result.status}, rc={result.rc}):"]
    lines += [f"  {escape(str(f))}" for f in result.failures]
    failed = {f.host for f in result.failures}
    others = [h for h in sorted(result.hosts) if h not in failed]
    skipped = result.plays_not_run
    if skipped:
        names = ", ".join(f"'{p}'" for p in skipped)
        lines.append(escape(f"  the run stopped before these plays, on every host: {names}"))
    for host in others:
        r = result.hosts[host]
        where = "stopped after" if skipped else "completed; last task"
        lines.append(escape(f"  {host}: no failure, {where} '{r.last_task}' (changed={r.changed})"))
    lines.append(f"  full event log: {escape(str(result.artifacts))}")
    return "\n".join(lines)
