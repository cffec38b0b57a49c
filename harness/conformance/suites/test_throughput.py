"""Scenario 28: iperf3 pod→pod across nodes against node→node on the underlay, same run.

For each test (TCP with 1 and 4 streams, UDP unlimited) the underlay between
the same two nodes is measured before and after the pods on them; all go to the
results with ``labels.path`` node-node / pod-pod, plus the ratio, retransmits,
UDP loss and the CPU cores iperf3 used on each side. Nothing here asserts a
figure: a run passes when both measurements were taken.
"""

from __future__ import annotations

import itertools
import time

import pytest

from harness.conformance.fixtures import EchoPods
from harness.conformance.pods import Pod
from harness.conformance.remote import Node
from harness.conformance.run import Recorder
from harness.probes import iperf3

# 4 streams on 2 cores is the heavy one: once per mode family in the default matrix.
TESTS = [
    pytest.param(proto, streams, id=f"{proto}-{streams}",
                 marks=pytest.mark.scenario(28, cost="heavy" if streams > 1 else None))
    for proto, streams in (("tcp", 1), ("tcp", 4), ("udp", 1))
]  # fmt: skip
_ports = itertools.count(5301)


@pytest.fixture(scope="module")
def perf_pods(echo_pods: EchoPods) -> tuple[Pod, Pod]:
    """The mode's shared echo pods on two nodes (the cross-node path)."""
    return echo_pods.pair("cross-node")


def measure(
    client_run, server: Node, server_netns: str | None, ip: str, proto: str, streams: int, secs: int
) -> iperf3.IperfResult:  # type: ignore[no-untyped-def]
    """Start a one-shot server (in a pod's netns if given), run the client, parse its JSON."""
    error: Exception | None = None
    for _ in range(3):
        port = next(_ports)
        argv = iperf3.server_command(port, lifetime_s=secs + 30)
        if server_netns:
            argv = ["ip", "netns", "exec", server_netns, *argv]
        server.start(argv, lifetime_s=secs + 30)
        time.sleep(0.5)
        cmd = iperf3.client_command(ip, port, secs, streams, udp=proto == "udp", udp_bitrate="0")
        res = client_run(cmd, timeout_s=secs + 20)
        try:
            return iperf3.parse(res.stdout or res.stderr)
        except iperf3.IperfError as exc:
            error = exc
            if "refused" not in str(exc):
                break
    raise AssertionError(f"iperf3 {proto} x{streams} to {ip} failed: {error}")


def _record(record: Recorder, result: iperf3.IperfResult, path: str, labels: dict[str, str]):  # type: ignore[no-untyped-def]
    tags = {**labels, "path": path}
    record("throughput_bps", result.received_bps, "bps", labels=tags)
    record("cpu_sender_cores", result.sender_cpu_cores, "cores", labels=tags)
    record("cpu_receiver_cores", result.receiver_cpu_cores, "cores", labels=tags)
    if result.retransmits is not None:
        record("retransmits_count", float(result.retransmits), "count", labels=tags)
    if result.lost_percent is not None:
        record("udp_loss_percent", result.lost_percent, "percent", labels=tags)


def _underlay(
    client: Pod, server: Pod, proto: str, streams: int, secs: int, record: Recorder,
    labels: dict[str, str],
) -> iperf3.IperfResult:  # fmt: skip
    """node→node between the pods' nodes, on their underlay addresses; recorded."""
    result = measure(client.node.run, server.node, None, server.node.underlay_ip, proto,
                     streams, secs)  # fmt: skip
    _record(record, result, "node-node", labels)
    return result


@pytest.mark.parametrize(("proto", "streams"), TESTS)
def test_pod_to_pod_throughput_against_underlay(
    nodes: dict[str, Node],
    perf_pods: tuple[Pod, Pod],
    proto: str,
    streams: int,
    thorough: bool,
    record: Recorder,
) -> None:
    client, server = perf_pods
    secs = 10 if thorough else 3
    labels = {"proto": proto, "streams": str(streams)}
    # The underlay is measured before and after the pods (the report takes the
    # median of repeats), so a neighbour's burst on a shared machine skews less.
    under = [_underlay(client, server, proto, streams, secs, record, labels)]
    pod = measure(client.run, server.node, server.netns, server.ip, proto, streams, secs)
    _record(record, pod, "pod-pod", labels)
    under.append(_underlay(client, server, proto, streams, secs, record, labels))
    base = sum(u.received_bps for u in under) / len(under)
    if base > 0:
        record("throughput_ratio_to_underlay", pod.received_bps / base, "ratio", labels=labels)
    assert pod.received_bps > 0, (
        f"{client} → {server} {server.ip}: iperf3 {proto} x{streams} moved no data"
    )
