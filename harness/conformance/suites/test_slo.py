"""Scenarios 5 and 6: pod network-ready latency against the 5 s SLO; datapath convergence.

Network-ready latency: ≥ 50 pods applied at once (scheduled over the nodes);
for each, the time from the apply until a TCP packet from *another* node
reaches the pod's kernel (a refusal counts: the pods run ``sleep``, so nothing
listens, and a RST proves the path). Probers start as soon as the api shows a
pod's address, so each figure is an upper bound by up to one poll and a
prober's start. Kubernetes' pod-startup SLO is p99 ≤ 5 s.

Convergence: a worker leaves (its agent stops, its node record and subnet
lease are removed from etcd) and joins again (its agent starts); the time until
every peer has dropped, then re-added, the route to its pod subnet.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from harness.api.objects import KINDS
from harness.conformance import labctl, paths
from harness.conformance.catalogue import not_applicable
from harness.conformance.labctl import Lab
from harness.conformance.pods import NAMESPACE, PodFactory, apply_pods, pod_manifest
from harness.conformance.remote import Node, output
from harness.conformance.run import Recorder
from harness.probes import echo
from harness.probes.stats import percentiles
from harness.store import keys

SLO_P99_S = 5.0
DISCARD_PORT = 9
_serial = itertools.count(1)


@pytest.mark.scenario(5)
def test_pod_network_ready_latency_meets_slo(
    lab: Lab, nodes: dict[str, Node], pod_factory: PodFactory, thorough: bool, record: Recorder
) -> None:
    cluster = [nodes[n.name] for n in lab.cluster_nodes()]
    if len(cluster) < 2:
        not_applicable(f"lab {lab.name}: needs two nodes to probe pods from another node")
    count = 100 if thorough else 50
    names = [f"slo-{next(_serial)}-{i}" for i in range(count)]
    pod_factory.created += names
    started = apply_pods(
        pod_factory.client, [pod_manifest(n, None, ["sleep", "infinity"]) for n in names]
    )
    first = _probe_until_reached(pod_factory, cluster, set(names), deadline_s=90)
    latencies = {n: t - started for n, t in first.items() if t is not None}
    missing = sorted(set(names) - set(latencies))
    record("pods_count", float(len(latencies)), "count")
    assert not missing, (
        f"{len(missing)}/{count} pods never reachable from another node within 90 s: "
        + ", ".join(missing[:5])
    )
    pct = percentiles(list(latencies.values()))
    record("pod_network_ready_p50_s", pct[50], "s")
    record("pod_network_ready_p90_s", pct[90], "s")
    record("pod_network_ready_p99_s", pct[99], "s", threshold=SLO_P99_S)
    if labctl.emulated(lab):
        not_applicable(
            f"emulated guests (TCG): p99 {pct[99]:.1f} s over {count} pods (all reachable) "
            f"measures the emulated CPU; the {SLO_P99_S:.0f} s SLO is judged on native CPUs "
            "only (figures recorded, marked emulated)"
        )
    assert pct[99] <= SLO_P99_S, (
        f"pod network-ready p99 is {pct[99]:.2f} s over {count} pods "
        f"(p50 {pct[50]:.2f} s), above the {SLO_P99_S:.0f} s SLO"
    )


def _probe_until_reached(
    factory: PodFactory, cluster: list[Node], names: set[str], deadline_s: float
) -> dict[str, float | None]:
    """Launch probers (from a node other than each pod's) as pod addresses appear."""
    end = time.monotonic() + deadline_s
    launched: dict[str, str] = {}  # pod name -> ip
    futures: list[Future[dict[str, float | None]]] = []
    rotation = itertools.cycle(range(len(cluster)))
    with ThreadPoolExecutor(max_workers=16) as pool:
        while len(launched) < len(names) and time.monotonic() < end:
            batch: dict[str, list[tuple[str, int]]] = {}
            for obj in factory.client.list_objects(KINDS["Pod"], NAMESPACE):
                name = obj["metadata"]["name"]
                ip = obj.get("status", {}).get("podIP")
                if name not in names or name in launched or not ip:
                    continue
                launched[name] = ip
                pod_node = obj["spec"].get("nodeName")
                prober = _other(cluster, pod_node, next(rotation))
                batch.setdefault(prober.name, []).append((ip, DISCARD_PORT))
            for prober_name, targets in batch.items():
                prober = next(n for n in cluster if n.name == prober_name)
                left = max(1.0, end - time.monotonic())
                futures.append(pool.submit(_reach, prober, targets, left))
            time.sleep(0.2)
        by_ip: dict[str, float | None] = {}
        for fut in futures:
            by_ip.update(fut.result())
    return {name: by_ip.get(f"{ip}:{DISCARD_PORT}") for name, ip in launched.items()}


def _other(cluster: list[Node], pod_node: str | None, turn: int) -> Node:
    """A prober on another node, on the pod's own segment when there is one (host-gw)."""
    others = [n for n in cluster if n.name != pod_node]
    segment = next(
        (n.plan.underlay.segment for n in cluster if n.name == pod_node and n.plan.underlay), None
    )
    near = [n for n in others if n.plan.underlay and n.plan.underlay.segment == segment]
    pool = near or others
    return pool[turn % len(pool)]


def _reach(
    node: Node, targets: list[tuple[str, int]], deadline_s: float
) -> dict[str, float | None]:
    argv = echo.reach_command(targets, deadline_s=deadline_s, refused_ok=True)
    res = node.run(argv, timeout_s=deadline_s + 15)
    return echo.parse_reach(output(res))


def _route_times(
    peers: list[Node], subnet: str, present: bool, deadline_s: float, action
) -> dict[str, float | None]:  # type: ignore[no-untyped-def]
    """Start route watchers on every peer, do ``action``, return each peer's seconds after it."""
    argv = echo.routewait_command(subnet, present, deadline_s)
    with ThreadPoolExecutor(max_workers=len(peers)) as pool:
        futs = {p.name: pool.submit(p.run, argv, deadline_s + 15) for p in peers}
        time.sleep(1.0)  # let the watchers start (each checks the state at once)
        started = time.time()
        action()
        at = {name: echo.parse_routewait(output(f.result())) for name, f in futs.items()}
    return {name: (t - started if t is not None else None) for name, t in at.items()}


@pytest.mark.scenario(6)
def test_datapath_converges_when_a_node_leaves_and_joins(
    lab: Lab, nodes: dict[str, Node], record: Recorder, mode: str
) -> None:
    members = [n for n in lab.cluster_nodes() if n.role == "worker"]
    if len(lab.cluster_nodes()) < 3 or not members:
        not_applicable(f"lab {lab.name}: needs a worker and two peers to watch it leave and join")
    leaver = nodes[members[-1].name]
    peers = [
        nodes[n.name]
        for n in lab.cluster_nodes()
        if n.name != leaver.name and paths.applies(lab, mode, n.name, leaver.name)
    ]
    if not peers:
        not_applicable(f"{mode}: no peer of {leaver.name} that the mode connects to it")
    client = lab.client()
    subnet = next((n.podCIDR for n in client.nodes() if n.name == leaver.name), None)
    assert subnet, f"node {leaver.name} has no podCIDR in its node record"
    leaver.service("stop", "podlab-agent")
    try:

        def leave() -> None:
            client.store.delete(keys.node_key(client.cluster, leaver.name))
            client.store.delete(keys.subnet_key(client.cluster, subnet))

        gone = _route_times(peers, subnet, False, 60, leave)
    finally:
        joined = _route_times(
            peers, subnet, True, 60,
            lambda: leaver.service("start", "podlab-agent"),
        )  # fmt: skip
    _report(record, "leave", gone, subnet, leaver.name)
    _report(record, "join", joined, subnet, leaver.name)


def _report(
    record: Recorder, what: str, times: dict[str, float | None], subnet: str, node: str
) -> None:
    late = sorted(name for name, t in times.items() if t is None)
    done = [t for t in times.values() if t is not None]
    if done:
        record(f"datapath_{what}_convergence_s", max(done), "s", labels={"node": node})
    state = "dropped" if what == "leave" else "added"
    assert not late, (
        f"after {node} {'left' if what == 'leave' else 'joined'}, peers "
        f"{', '.join(late)} never {state} the route to {subnet} within 60 s"
    )
