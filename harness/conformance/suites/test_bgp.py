"""Scenario 21: the BGP control plane of mode ``bgp`` (BIRD on every node).

- Every planned session is Established per ``birdc show protocols`` (typed
  with no flags, as on any router) on every node: a full mesh has n(n−1)/2
  sessions (each node sees n−1); with route reflectors, clients peer only with
  reflectors (``bird.plan_peers`` decides). A node of a meshed cluster also
  peers with the lab routers on its segment (native mesh routing, ADR 0015:
  ``plan.bgp.node_routers``, what its agent.yaml ``bgp_routers`` holds): those
  ``router_*`` sessions are planned too and must be Established — which they
  are only when the whole mesh runs ``bgp`` and the routers were deployed for
  it (a cluster switched to ``bgp`` alone breaks the mesh's rules, and fails
  here). Any other session is unplanned and fails the check.
- Each peer's pod subnet is in every node's kernel table with ``proto bird``
  (not in ``MODE+wireguard``, where BIRD exports nothing and the agent routes
  peers through the WireGuard device).
- BIRD stopped on one node (SIGTERM to the pid in its ``/run/podlab/bird.pid``):
  its pod subnet leaves every other node's table within the hold time (3 s);
  the withdrawal time is recorded. Then the node's agent is restarted
  (supervisorctl), which starts BIRD again: the time until every session is
  Established and every route is back is recorded.
"""

from __future__ import annotations

import ipaddress
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.agent import bird
from harness.conformance.catalogue import not_applicable
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.remote import Node
from harness.conformance.run import Recorder
from harness.plan import bgp as plan_bgp

RUN_DIR = "/run/podlab"
BIRDC = ["birdc"]  # no -s: as an engineer types it on a node (BIRD's default socket)
HOLD_S = 3.0  # bird.render: hold time 3 s
RECOVERY_S = 60.0


def _clear(spec: ModeSpec) -> str | None:
    """Withdrawal is seen in the kernel tables, which BIRD leaves alone under WireGuard."""
    if spec.encryption == "none":
        return None
    return f"{spec}: BIRD exports no kernel routes under WireGuard; nothing to withdraw"


def _members(lab: Lab, nodes: dict[str, Node]) -> dict[str, tuple[Node, str, str, bool]]:
    """Cluster node → (node, underlay IP, pod subnet, is route reflector), from node records."""
    out = {}
    for rec in lab.client().nodes():
        if rec.name not in nodes or not rec.underlayIP or not rec.podCIDR:
            continue
        backend = (rec.model_extra or {}).get("backend") or {}
        rr = isinstance(backend, dict) and str(backend.get("RouteReflector", "")).lower() in (
            "true", "1", "yes")  # fmt: skip
        out[rec.name] = (nodes[rec.name], rec.underlayIP, rec.podCIDR, rr)
    return out


def _sessions(node: Node) -> list[bird.Session]:
    res = node.check([*BIRDC, "show", "protocols"], timeout_s=15)
    return [s for s in bird.parse_protocols(res.stdout) if s.proto == "BGP"]


def _bird_routes(node: Node) -> dict[str, str]:
    """The node's kernel routes with proto bird: prefix → next hop."""
    res = node.check(["ip", "-j", "-4", "route", "show", "proto", "bird"], timeout_s=10)
    routes = json.loads(res.stdout or "[]")
    return {str(ipaddress.ip_network(r["dst"])): str(r.get("gateway", "")) for r in routes}


def router_sessions(lab: Lab, names: list[str]) -> dict[str, set[str]]:
    """Each node's planned sessions with the lab's routers (BIRD protocol names): the
    routers on its segment when its cluster is in a mesh (``plan.bgp.node_routers``,
    the inventory's ``podlab_bgp_routers``), none otherwise."""
    return {
        name: {
            bird.RouterPeer(r["name"], ipaddress.IPv4Address(r["address"]), int(r["as"])).protocol
            for r in plan_bgp.node_routers(lab.plan, name)
        }
        for name in names
    }


def planned_sessions(
    ips: dict[str, ipaddress.IPv4Address],
    reflectors: list[str],
    routers: dict[str, set[str]],
) -> dict[str, set[str]]:
    """Each node's planned BGP sessions: its in-cluster peers (full mesh or reflectors)
    and its routers (``router_sessions``)."""
    return {
        me: {p.protocol for p in bird.plan_peers(me, ips, reflectors)} | routers.get(me, set())
        for me in ips
    }


def session_problems(name: str, planned: set[str], sessions: list[bird.Session]) -> list[str]:
    """What is wrong with one node's BGP sessions against its plan: a planned one not
    Established, or one the plan does not have (e.g. a router session of a cluster
    that peers with its router while the mesh does not route natively)."""
    by_name = {s.name: s for s in sessions}
    problems = []
    down = sorted(p for p in planned if not (p in by_name and by_name[p].established))
    extra = sorted(set(by_name) - planned)
    if down:
        why = [f"{p} ({by_name[p].state} {by_name[p].info})" if p in by_name else p
               for p in down]  # fmt: skip
        problems.append(f"{name}: not Established: {', '.join(why)}")
    if extra:
        problems.append(f"{name}: unplanned sessions {', '.join(extra)}")
    return problems


def _planned(lab: Lab, members: dict[str, tuple[Node, str, str, bool]]) -> dict[str, set[str]]:
    ips = {n: ipaddress.IPv4Address(m[1]) for n, m in members.items()}
    reflectors = [n for n, m in members.items() if m[3]]
    return planned_sessions(ips, reflectors, router_sessions(lab, list(members)))


def _not_converged(
    lab: Lab, members: dict[str, tuple[Node, str, str, bool]], encrypted: bool
) -> list[str]:  # fmt: skip
    """Every problem with the BGP state right now (an empty list: converged)."""
    problems = []
    planned = _planned(lab, members)
    for name, (node, _ip, _subnet, _rr) in members.items():
        problems += session_problems(name, planned[name], _sessions(node))
        if encrypted:
            continue
        routes = _bird_routes(node)
        for peer, (_n, peer_ip, subnet, _r) in members.items():
            if peer == name:
                if subnet in routes:
                    problems.append(f"{name}: its own subnet {subnet} is a proto bird route")
            elif routes.get(subnet) != peer_ip:
                problems.append(f"{name}: {subnet} not via {peer_ip} proto bird "
                                f"(has {routes.get(subnet, 'no route')})")  # fmt: skip
    return problems


def _wait_converged(
    lab: Lab, members: dict[str, tuple[Node, str, str, bool]], encrypted: bool, timeout_s: float
) -> tuple[float | None, list[str]]:
    start = time.monotonic()
    problems: list[str] = []
    while time.monotonic() - start < timeout_s:
        problems = _not_converged(lab, members, encrypted)
        if not problems:
            return time.monotonic() - start, []
        time.sleep(0.5)
    return None, problems


@pytest.mark.scenario(21)
def test_every_bgp_session_is_established_and_routes_are_in_the_kernel(
    lab: Lab, mode: str, nodes: dict[str, Node], record: Recorder
) -> None:
    spec = ModeSpec.parse(mode)  # mode bgp (the catalogue's rule for scenario 21)
    members = _members(lab, {n.name: nodes[n.name] for n in lab.cluster_nodes()})
    if len(members) < 2:
        not_applicable(f"lab {lab.name}: BGP needs two nodes with a pod subnet")
    planned = _planned(lab, members)
    routers = router_sessions(lab, list(members))
    n_routers = sum(len(r) for r in routers.values())  # one end in the cluster: counted once
    sessions = (sum(len(p) for p in planned.values()) - n_routers) // 2 + n_routers
    reflectors = [n for n, m in members.items() if m[3]]
    n = len(members)
    record("bgp_sessions_planned_count", float(sessions), "count",
           labels={"topology": "reflectors" if reflectors else "full mesh",
                   "router_sessions": str(n_routers)})  # fmt: skip
    if not reflectors:
        assert sessions == n * (n - 1) // 2 + n_routers, (
            f"full mesh of {n} nodes and {n_routers} router sessions planned {sessions} sessions"
        )
    took, problems = _wait_converged(lab, members, spec.encryption != "none", 30.0)
    assert took is not None, "BGP not converged after 30 s:\n  " + "\n  ".join(problems[:10])
    up = {name: {s.name for s in _sessions(m[0]) if s.established} for name, m in members.items()}
    in_cluster = sum(len(u - routers[name]) for name, u in up.items()) // 2
    established = in_cluster + sum(len(u & routers[name]) for name, u in up.items())
    record("bgp_sessions_established_count", float(established), "count")
    assert established == sessions


def _still_runs(node: Node, pid: int, wait_s: float) -> bool:
    """Whether ``pid`` still runs (not a zombie) on ``node`` after waiting up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        stat = node.run(["ps", "-o", "stat=", "-p", str(pid)], timeout_s=10).stdout.strip()
        if not stat or stat.startswith("Z"):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.2)


@pytest.mark.scenario(21, applies=_clear)
def test_stopped_bird_is_withdrawn_within_the_hold_time_and_comes_back(
    lab: Lab, mode: str, nodes: dict[str, Node], record: Recorder
) -> None:
    members = _members(lab, {n.name: nodes[n.name] for n in lab.cluster_nodes()})
    if len(members) < 2:
        not_applicable(f"lab {lab.name}: BGP needs two nodes with a pod subnet")
    took, problems = _wait_converged(lab, members, False, 30.0)
    assert took is not None, "BGP not converged before the test:\n  " + "\n  ".join(problems[:10])
    victim_name = sorted(members)[-1]
    victim, _ip, subnet, _rr = members[victim_name]
    others = [m[0] for n, m in members.items() if n != victim_name]
    pid = int(victim.check(["cat", f"{RUN_DIR}/bird.pid"], timeout_s=10).stdout.strip())
    victim.check(["kill", "-TERM", str(pid)], timeout_s=10)
    stopped = time.monotonic()

    def gone_from(node: Node) -> float | None:
        while time.monotonic() - stopped < HOLD_S * 5:
            if subnet not in _bird_routes(node):
                return time.monotonic() - stopped
            time.sleep(0.1)
        return None

    with ThreadPoolExecutor(max_workers=len(others)) as pool:
        withdrawn = dict(zip([o.name for o in others], pool.map(gone_from, others), strict=True))
    for name, seconds in withdrawn.items():
        if seconds is not None:
            record("bgp_withdrawal_s", seconds, "s", threshold=HOLD_S, labels={"observer": name})
    still = _still_runs(victim, pid, wait_s=10.0)  # BIRD's graceful shutdown takes a moment
    restarted = time.monotonic()
    victim.service("restart", "podlab-agent")
    back, problems = _wait_converged(lab, members, False, RECOVERY_S)
    if back is not None:
        record("bgp_recovery_after_agent_restart_s", time.monotonic() - restarted, "s")
    late = {n: s for n, s in withdrawn.items() if s is None or s > HOLD_S}
    assert not still, f"BIRD (pid {pid}) on {victim_name} still runs after SIGTERM"
    assert not late, (
        f"{victim_name}'s {subnet} not withdrawn within the {HOLD_S:.0f} s hold time on: "
        + ", ".join(f"{n} ({'never' if s is None else f'{s:.1f} s'})" for n, s in late.items())
    )
    assert back is not None, (
        f"BGP did not recover {RECOVERY_S:.0f} s after restarting the agent on {victim_name}:\n  "
        + "\n  ".join(problems[:10])
    )
