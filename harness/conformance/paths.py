"""Which node pairs exercise which path: same node, across nodes, across segments.

A lab decides what a suite can check: two workers on one bridge give
"cross-node", a router between segments gives "cross-segment". Paths a lab
cannot offer come back as None so the test skips, saying why.
"""

from __future__ import annotations

from harness.conformance.labctl import Lab
from harness.plan.model import NodePlan

PATHS = ("same-node", "cross-node", "cross-segment")
# Modes whose routes need the peer on the same L2 segment (next hop = the peer's
# underlay address): across a router they do not apply. Flannel documents
# host-gw this way and refuses such peers; so does our agent.
L2_ONLY_MODES = ("host-gw",)


def _segment(node: NodePlan) -> str:
    return node.underlay.segment if node.underlay else ""


def node_pair(lab: Lab, path: str, cluster: str | None = None) -> tuple[str, str] | None:
    """(client node, server node) for ``path``, or None when the lab has no such pair."""
    nodes = lab.cluster_nodes(cluster)
    if not nodes:
        return None
    first = nodes[0]
    if path == "same-node":
        return first.name, first.name
    same_seg = [n for n in nodes[1:] if _segment(n) == _segment(first)]
    other_seg = [n for n in nodes[1:] if _segment(n) != _segment(first)]
    if path == "cross-node":
        pick = same_seg or other_seg
        return (first.name, pick[0].name) if pick else None
    if path == "cross-segment":
        return (first.name, other_seg[0].name) if other_seg else None
    raise ValueError(f"unknown path {path!r} (paths: {', '.join(PATHS)})")


def mode_excludes(mode: str, path: str) -> str | None:
    """Why ``mode`` (a matrix entry) does not apply to ``path``, or None when it does."""
    base = mode.split("+", 1)[0]
    if path == "cross-segment" and base in L2_ONLY_MODES:
        return f"{base} needs every peer on the same L2 segment; it does not route across one"
    return None


def applies(lab: Lab, mode: str, node_a: str, node_b: str) -> bool:
    """Whether ``mode`` is expected to connect pods on these two nodes at all."""
    a, b = lab.plan.nodes[node_a], lab.plan.nodes[node_b]
    return _segment(a) == _segment(b) or mode_excludes(mode, "cross-segment") is None


def why_missing(lab: Lab, path: str) -> str:
    """The skip reason for a path the lab cannot offer."""
    if path == "cross-segment":
        return f"lab {lab.name}: every node of the cluster is on one L2 segment"
    return f"lab {lab.name}: the cluster has a single node that runs pods"
