"""Scenario 29: TCP request/response round trips, pod→pod across nodes against node→node.

One TCP connection, one-line requests echoed back (``netcheck rr`` against the
echo workload), and the same between the two nodes' underlay addresses in the
same run: p50, p90 and p99 of each as ``latency_pNN_s`` with ``labels.path``.
"""

from __future__ import annotations

import pytest

from harness.conformance.fixtures import EchoPods
from harness.conformance.pods import TCP_PORT, Pod
from harness.conformance.remote import Node
from harness.conformance.run import Recorder
from harness.probes import echo
from harness.probes.stats import percentiles

NODE_PORT = 18081


@pytest.fixture(scope="module")
def rr_pods(echo_pods: EchoPods) -> tuple[Pod, Pod]:
    """The mode's shared echo pods on two nodes (the cross-node path)."""
    return echo_pods.pair("cross-node")


def _round_trips(run, ip: str, port: int, count: int) -> tuple[float, ...]:  # type: ignore[no-untyped-def]
    res = run(echo.rr_command(ip, port, count), timeout_s=60)
    trips = echo.parse_rr(f"{res.stdout}\n{res.stderr}")
    assert not trips.error and len(trips.rtts_s) == count, (
        f"request/response to {ip}:{port}/tcp stopped after {len(trips.rtts_s)}/{count}: "
        f"{trips.error or res.stderr.strip()}"
    )
    return trips.rtts_s


@pytest.mark.scenario(29)
def test_tcp_request_response_latency(
    nodes: dict[str, Node], rr_pods: tuple[Pod, Pod], thorough: bool, record: Recorder
) -> None:
    client, server = rr_pods
    count = 2000 if thorough else 300
    server.node.start_echo(NODE_PORT, lifetime_s=90)
    node_trips = _round_trips(client.node.run, server.node.underlay_ip, NODE_PORT, count)
    pod_trips = _round_trips(client.run, server.ip, TCP_PORT, count)
    for path, trips in (("node-node", node_trips), ("pod-pod", pod_trips)):
        for pct, value in percentiles(trips).items():
            record(f"latency_p{pct}_s", value, "s", labels={"path": path})
    pod_p50, node_p50 = percentiles(pod_trips)[50], percentiles(node_trips)[50]
    if node_p50 > 0:
        record("latency_p50_ratio_to_underlay", pod_p50 / node_p50, "ratio")
