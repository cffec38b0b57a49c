"""Scenario 19: the leak test, with its negative control in every unencrypted mode.

A pod sends a unique canary over UDP to a pod on another node while the
server node's underlay is captured. Encrypted (``MODE+wireguard``): the canary
never appears and no packet carries the pods' addresses in its outer header.
Unencrypted: the canary must be seen — the same capture, proving it would have
caught a leak (a check that cannot fail proves nothing).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.conformance import paths
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.pods import UDP_PORT, Pod, PodFactory
from harness.conformance.remote import output
from harness.conformance.run import Recorder
from harness.probes import capture, echo

CAPTURE_S = 6.0


@pytest.fixture(scope="module")
def leak_pods(lab: Lab, module_pod_factory: PodFactory) -> tuple[Pod, Pod]:
    pair = paths.node_pair(lab, "cross-node")
    if pair is None:
        pytest.skip(paths.why_missing(lab, "cross-node"))
    client, server = module_pod_factory.create(list(pair), prefix="leak")
    return client, server


def _capture_while_sending(client: Pod, server: Pod, bpf: str, canary: str) -> capture.Capture:
    node = server.node
    argv = capture.command(node.underlay_if, bpf, CAPTURE_S)
    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(node.run, argv, CAPTURE_S + 15)
        time.sleep(1.5)  # tcpdump attaches
        client.run(echo.probe_command("udp", server.ip, UDP_PORT, count=5, payload=canary), 20)
        res = fut.result()
    return capture.parse(output(res), canary=canary)


@pytest.mark.scenario(19)
def test_no_plaintext_on_the_underlay_when_encrypted(
    lab: Lab, mode: str, leak_pods: tuple[Pod, Pod], record: Recorder
) -> None:
    client, server = leak_pods
    encrypted = ModeSpec.parse(mode).encryption != "none"
    canary = f"podlab-canary-{uuid.uuid4().hex[:12]}"
    everything = _capture_while_sending(client, server, "not arp", canary)
    plain = _capture_while_sending(client, server, f"host {client.ip} and host {server.ip}", canary)
    labels = {"capture": f"{server.node.name}:{server.node.underlay_if}",
              "encryption": "on" if encrypted else "off",
              "control": "no" if encrypted else "yes"}  # fmt: skip
    record("leak_canary_seen_count", float(everything.canary_seen), "count", labels=labels)
    record("leak_plaintext_packets_count", float(plain.packets), "count", labels=labels)
    assert everything.packets > 0, (
        f"the capture on {server.node.name} {server.node.underlay_if} saw no packet at all "
        f"while {client} sent to {server}: it cannot judge a leak"
    )
    if encrypted:
        assert not everything.canary_seen and plain.packets == 0, (
            f"{mode}: traffic {client} → {server} leaked on the underlay of "
            f"{server.node.name}: {everything.describe()}, {plain.packets} packets with pod "
            "addresses in clear"
        )
    else:
        assert everything.canary_seen, (
            f"negative control ({mode}, unencrypted): the canary {client} → {server} was not "
            f"seen on {server.node.name} {server.node.underlay_if} ({everything.describe()}); "
            "the capture would miss a leak"
        )
