"""A Mermaid picture of a lab: clusters as subgraphs, bridges as circles, links as edges."""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import UserError
from harness.lab import state
from harness.lab.state import Ledger
from harness.plan.model import LabPlan


def plan_for(lab_or_file: str) -> LabPlan:
    """The plan of a topology file, or of a lab that is up (from its recorded source)."""
    from harness.plan.build import load_plan

    path = Path(lab_or_file)
    if path.is_file():
        return load_plan(path)
    paths = state.find(lab_or_file)
    if not paths.state.exists():
        raise UserError(f"{lab_or_file}: neither a topology file nor a lab that is up")
    source = Path(Ledger.load(paths).source)
    if not source.is_file():
        raise UserError(f"lab {lab_or_file}: its topology file {source} is gone")
    return load_plan(source)


def _id(name: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def mermaid(plan: LabPlan) -> str:
    """Mermaid ``flowchart`` text for ``plan`` (stable order, so diffs stay small)."""
    lines = ["flowchart LR", f"  %% lab {plan.name} from {plan.source}"]
    clustered: set[str] = set()
    for cl in sorted(plan.clusters.values(), key=lambda c: c.name):
        lines.append(
            f'  subgraph {_id("cluster-" + cl.name)}["cluster {cl.name}: {cl.mode}, '
            f'pods {cl.pod_cidr}"]'
        )
        for name in cl.nodes:
            lines.append(f"    {_node(plan, name)}")
            clustered.add(name)
        lines.append("  end")
    for name in sorted(set(plan.nodes) - clustered - set(plan.bridges)):
        lines.append(f"  {_node(plan, name)}")
    for seg in sorted(plan.segments.values(), key=lambda s: s.name):
        if seg.kind == "bridge":
            lines.append(f'  {_id(seg.name)}(("{seg.name}<br/>{seg.subnet}"))')
            for node, iface in seg.members:
                if node in plan.nodes:
                    lines.append(f"  {_id(node)} -- {iface} --- {_id(seg.name)}")
        else:
            ends = [(n, i) for n, i in seg.members if n in plan.nodes]
            if len(ends) == 2:
                (a, ia), (b, ib) = ends
                lines.append(f'  {_id(a)} -- "{ia} {seg.subnet} {ib}" --- {_id(b)}')
    return "\n".join(lines) + "\n"


def _node(plan: LabPlan, name: str) -> str:
    n = plan.nodes[name]
    under = f"<br/>{n.underlay.address}" if n.underlay and n.underlay.address else ""
    shape = ('{{"', '"}}') if n.is_router else ('["', '"]')
    return f"{_id(name)}{shape[0]}{name}<br/>{n.role}<br/>mgmt {n.mgmt.ip}{under}{shape[1]}"
