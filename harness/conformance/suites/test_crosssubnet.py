"""Scenario 22: cross-subnet — direct inside a segment, encapsulated across segments.

Pod traffic is captured on the server node's underlay: with a peer in the same
L2 segment the packets carry the pods' own addresses in their outer header
(no encapsulation); with a peer across a router, none do, and encapsulated
packets (IPIP, or VXLAN on UDP 4789) carry them instead.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.conformance import paths
from harness.conformance.catalogue import not_applicable
from harness.conformance.fixtures import EchoPods
from harness.conformance.labctl import Lab
from harness.conformance.pods import UDP_PORT, Pod
from harness.conformance.remote import output
from harness.conformance.run import Recorder
from harness.probes import capture, echo

CAPTURE_S = 5.0
ENCAPSULATED = "ip proto 4 or udp port 4789"


@pytest.fixture(scope="module")
def subnet_pods(lab: Lab, echo_pods: EchoPods) -> dict[str, Pod]:
    near, far = paths.node_pair(lab, "cross-node"), paths.node_pair(lab, "cross-segment")
    if near is None or far is None or near[1] == far[1]:
        not_applicable(paths.why_missing(lab, "cross-segment"))
    return {"client": echo_pods.first, "near": echo_pods.on[near[1]], "far": echo_pods.on[far[1]]}


def _count(client: Pod, server: Pod, bpf: str) -> int:
    node = server.node
    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(node.run, capture.command(node.underlay_if, bpf, CAPTURE_S), 20)
        time.sleep(1.5)
        client.run(echo.probe_command("udp", server.ip, UDP_PORT, count=5), timeout_s=20)
        return capture.parse(output(fut.result())).packets


@pytest.mark.scenario(22)
@pytest.mark.parametrize("peer", ("near", "far"))
def test_encapsulation_only_across_segments(
    subnet_pods: dict[str, Pod], peer: str, record: Recorder
) -> None:
    client, server = subnet_pods["client"], subnet_pods[peer]
    plain = _count(client, server, f"host {client.ip} and host {server.ip}")
    encap = _count(client, server, f"({ENCAPSULATED}) and host {client.node.underlay_ip}")
    labels = {"peer": peer, "capture": f"{server.node.name}:{server.node.underlay_if}"}
    record("plain_pod_packets_count", float(plain), "count", labels=labels)
    record("encapsulated_packets_count", float(encap), "count", labels=labels)
    where = f"{client} → {server} ({'same segment' if peer == 'near' else 'across segments'})"
    if peer == "near":
        assert plain > 0 and encap == 0, (
            f"{where}: expected direct routing, saw {plain} plain and {encap} encapsulated packets"
        )
    else:
        assert plain == 0 and encap > 0, (
            f"{where}: expected encapsulation, saw {plain} plain and {encap} encapsulated packets"
        )
