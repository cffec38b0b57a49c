"""Scenarios 1, 2 and 4: pods reach pods, nodes and the outside, and are answered by name.

The mode's shared echo pods (``echo_pods``: one per cluster node plus a second
on the first node); every path the
lab offers (same node, across nodes, across segments) is probed with ICMP, TCP,
UDP and HTTP. The TCP echo's greeting names the server pod and the client
address it saw, so pod→pod also proves that pod addresses survive the trip
(no SNAT between pods) and egress proves masquerading to the node's address.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.conformance import asserts, paths
from harness.conformance.catalogue import not_applicable
from harness.conformance.fixtures import EchoPods
from harness.conformance.labctl import Lab
from harness.conformance.pods import HTTP_PORT, TCP_PORT, UDP_PORT, Pod
from harness.conformance.remote import Node
from harness.probes import echo, ping

PORTS = {"tcp": TCP_PORT, "udp": UDP_PORT, "http": HTTP_PORT}
PROTOS = ("icmp", "tcp", "udp", "http")
NODE_PORTS = {"tcp": 18080, "udp": 18082, "egress": 18084}
PARALLEL_PROBES = 6  # probes in flight at once (each an ssh session and a process)


def probe(src_run, proto: str, ip: str, name: str) -> str | None:  # type: ignore[no-untyped-def]
    """Run one probe from ``src_run`` (a Pod or Node ``run``); the failure phrase or None."""
    if proto == "icmp":
        res = ping.parse(_out(src_run(ping.command(ip, count=3), timeout_s=15)))
        return None if res.ok else f"{res.describe()}"
    report = echo.parse_probe(_out(src_run(echo.probe_command(proto, ip, PORTS[proto]), 30)))
    return asserts.probe_problem(report, want_name=name)


def _out(res) -> str:  # type: ignore[no-untyped-def]
    return f"{res.stdout}\n{res.stderr}"


def _server_pod(echo_pods: EchoPods, lab: Lab, mode: str, path: str) -> tuple[Pod, Pod]:
    excluded = paths.mode_excludes(mode, path)
    if excluded:
        not_applicable(excluded)
    return echo_pods.pair(path)


@pytest.mark.scenario(1)
@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("path", paths.PATHS)
def test_pod_reaches_pod(lab: Lab, mode: str, echo_pods: EchoPods, path: str, proto: str) -> None:
    client, server = _server_pod(echo_pods, lab, mode, path)
    failure = probe(client.run, proto, server.ip, server.name)
    where = f"{server.ip}" + (f":{PORTS[proto]}" if proto in PORTS else "") + f"/{proto}"
    assert failure is None, f"{client} cannot reach {server} {where} ({path}): {failure}"


@pytest.mark.scenario(1)
@pytest.mark.parametrize("path", ("same-node", "cross-node", "cross-segment"))
def test_pod_address_is_kept_between_pods(
    lab: Lab, mode: str, echo_pods: EchoPods, path: str
) -> None:
    """The server sees the client pod's own address: pod-to-pod traffic is never NATed."""
    client, server = _server_pod(echo_pods, lab, mode, path)
    report = echo.parse_probe(_out(client.run(echo.probe_command("tcp", server.ip, TCP_PORT))))
    asserts.assert_reaches(str(client), str(server), report, want_name=server.name)
    seen = {r.split()[1].rpartition(":")[0] for r in report.replies() if len(r.split()) > 1}
    assert seen == {client.ip}, (
        f"{server} saw {client} as {', '.join(sorted(seen))}, expected its pod address {client.ip}"
    )


@pytest.mark.scenario(2)
@pytest.mark.parametrize("proto", PROTOS)
def test_node_reaches_pods(
    lab: Lab, mode: str, nodes: dict[str, Node], echo_pods: EchoPods, proto: str
) -> None:
    """Every cluster node reaches a pod on itself and on every other node (the mode allows).

    The probes run in parallel: each is an ssh round trip and an interpreter
    start, which is what this test's time went to when they ran one by one.
    """
    targets = list(echo_pods.on.values())
    pairs = [
        (node.name, pod)
        for node in lab.cluster_nodes()
        for pod in targets
        if paths.applies(lab, mode, node.name, pod.node.name)
    ]

    def one(pair: tuple[str, Pod]) -> str | None:
        node, pod = pair
        failure = probe(nodes[node].run, proto, pod.ip, pod.name)
        return f"node {node} cannot reach {pod} {pod.ip}/{proto}: {failure}" if failure else None

    with ThreadPoolExecutor(max_workers=PARALLEL_PROBES) as pool:
        failures = [f for f in pool.map(one, pairs) if f]
    asserts.assert_matrix(failures, len(targets) * len(lab.cluster_nodes()), "node → pod")


@pytest.mark.scenario(2)
@pytest.mark.parametrize("proto", ("icmp", "tcp", "udp"))
def test_pod_reaches_nodes(
    lab: Lab, mode: str, nodes: dict[str, Node], echo_pods: EchoPods, proto: str
) -> None:
    """A pod reaches its own node and every other node at their underlay addresses."""
    client = echo_pods.first
    failures: list[str] = []
    cluster = [
        nodes[n.name]
        for n in lab.cluster_nodes()
        if paths.applies(lab, mode, client.node.name, n.name)
    ]
    if proto != "icmp":
        with ThreadPoolExecutor(max_workers=PARALLEL_PROBES) as pool:
            list(pool.map(lambda n: n.start_echo(NODE_PORTS[proto], lifetime_s=30), cluster))

    def one(node: Node) -> str | None:
        if proto == "icmp":
            res = ping.parse(_out(client.run(ping.command(node.underlay_ip), 15)))
            fail = None if res.ok else res.describe()
        else:
            argv = echo.probe_command(proto, node.underlay_ip, NODE_PORTS[proto])
            report = echo.parse_probe(_out(client.run(argv, 30)))
            fail = asserts.probe_problem(report, want_name=node.name)
        return (
            f"{client} cannot reach node {node.name} {node.underlay_ip}: {fail}" if fail else None
        )

    with ThreadPoolExecutor(max_workers=PARALLEL_PROBES) as pool:
        failures += [f for f in pool.map(one, cluster) if f]
    asserts.assert_matrix(failures, len(cluster), f"pod → node ({proto})")


@pytest.mark.scenario(4)
def test_egress_is_masqueraded(lab: Lab, nodes: dict[str, Node], echo_pods: EchoPods) -> None:
    """A pod reaches the lab's outside host, which sees the pod's node address, not the pod's."""
    host = nodes[lab.outside_nodes()[0].name]  # the catalogue: scenario 4 needs an outside host
    client = echo_pods.first
    port = lab.port(NODE_PORTS["egress"])  # the outside host serves every cluster's run
    host.start_echo(port, lifetime_s=30)
    argv = echo.probe_command("tcp", host.underlay_ip, port)
    report = echo.parse_probe(_out(client.run(argv)))
    asserts.assert_reaches(str(client), f"outside host {host.name}", report, want_name=host.name)
    seen = {r.split()[1].rpartition(":")[0] for r in report.replies() if len(r.split()) > 1}
    node_ip = client.node.underlay_ip
    assert seen == {node_ip}, (
        f"outside host {host.name} saw {client} as {', '.join(sorted(seen))}, "
        f"expected its node's address {node_ip} (masquerade)"
    )
