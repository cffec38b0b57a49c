"""Static underlay routes: every node reaches every segment through the routers.

Segments and routers form a graph; a breadth-first search from each node's own
segments finds the shortest path, and the first router on it is the next hop.
Only router nodes forward, so a multi-homed worker is never used as transit.
"""

from __future__ import annotations

from collections import deque

from harness.errors import Collector
from harness.plan.model import Interface, Route, Segment


def static_routes(
    segments: dict[str, Segment],
    ifaces: dict[str, list[Interface]],
    routers: set[str],
    c: Collector,
) -> dict[str, list[Route]]:
    """Routes per node to each segment it is not attached to."""
    seg_routers: dict[str, list[str]] = {s: [] for s in segments}
    for r in sorted(routers):
        for i in ifaces.get(r, []):
            seg_routers[i.segment].append(r)
    out: dict[str, list[Route]] = {}
    unreachable: set[tuple[str, str]] = set()
    for node, own in ifaces.items():
        mine = {i.segment: i for i in own}
        first_hop = _bfs(mine, seg_routers, ifaces, node)
        routes = []
        for seg in sorted(segments):
            if seg in mine:
                continue
            hop = first_hop.get(seg)
            if hop is None:
                unreachable.add((node, seg))
                continue
            router, local_seg = hop
            via = next(i.address for i in ifaces[router] if i.segment == local_seg)
            dest = segments[seg].subnet
            if via is None or dest is None:  # only plain labs leave these out; no routes
                continue
            routes.append(Route(dest, via.ip, mine[local_seg].name))
        out[node] = routes
    for node, seg in sorted(unreachable):
        if ifaces[node]:
            c.add(
                f"node {node}",
                f"cannot reach segment {seg}: no router joins them",
                "connect the segments through a node with podlab.role: router",
            )
    return out


def _bfs(
    mine: dict[str, Interface],
    seg_routers: dict[str, list[str]],
    ifaces: dict[str, list[Interface]],
    node: str,
) -> dict[str, tuple[str, str]]:
    """Segment → (first router, our segment it sits on) along a shortest path."""
    first: dict[str, tuple[str, str]] = {}
    queue: deque[tuple[str, tuple[str, str] | None]] = deque((s, None) for s in sorted(mine))
    seen = set(mine)
    while queue:
        seg, hop = queue.popleft()
        for router in seg_routers[seg]:
            if router == node:
                continue
            for i in ifaces[router]:
                if i.segment in seen:
                    continue
                seen.add(i.segment)
                nxt = hop or (router, seg)
                first[i.segment] = nxt
                queue.append((i.segment, nxt))
    return first
