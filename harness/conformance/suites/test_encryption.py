"""Scenarios 19 and 20: the leak test (with its negative control) and strict mode.

Leak test: a pod sends a unique canary over UDP to a pod on another node while
the underlay of BOTH nodes is captured. Encrypted (``MODE+wireguard``): the
canary never appears, no packet carries the pods' addresses in its outer
header, and every packet between the two nodes is WireGuard UDP (port 51820).
Unencrypted: the canary must be seen on both nodes — the same capture,
proving it would have caught a leak (a check that cannot fail proves nothing).

Strict mode: the server node's peer is removed from the client node's
WireGuard device (``wg set IFACE peer PUB remove``, on the client node). Pod
traffic to the server's pods must then be dropped — never sent in clear — and
the agent's periodic resync must put the peer back; the time until pods talk
again is recorded.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from harness.conformance.fixtures import EchoPods
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.pods import UDP_PORT, Pod
from harness.conformance.remote import Node, output
from harness.conformance.run import Recorder
from harness.probes import capture, echo

CAPTURE_S = 6.0
WG_PORT = 51820
RESTORE_S = 60.0  # the agent resyncs every 10 s by default; generous on a loaded machine
# "1700000000.123456 IP 10.100.0.2.51820 > 10.100.0.3.51820: UDP, length 148"
_IP_LINE = re.compile(
    r"^\d{9,}\.\d{6} IP (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))? > (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))?: (.*)$"
)


@dataclass(frozen=True)
class Wire:
    """What one node's underlay capture saw between the two nodes and the two pods."""

    node: str
    raw: capture.Capture
    between_nodes: int  # packets whose outer header is node ↔ node
    not_wireguard: tuple[str, ...]  # node ↔ node packets that are not UDP 51820 ↔ 51820
    pod_addressed: int  # packets whose outer header carries a pod address

    def describe(self) -> str:
        return (
            f"{self.node}: {self.raw.describe()}, {self.between_nodes} node↔node, "
            f"{len(self.not_wireguard)} of them not WireGuard, {self.pod_addressed} with pod "
            "addresses in clear"
            + (
                f" (first not WireGuard: {self.not_wireguard[0][:120]})"
                if self.not_wireguard
                else ""
            )
        )


def classify(
    node: str, text: str, canary: str, nodes: set[str], pods: set[str],
    control_ports: frozenset[str] = frozenset(),
) -> Wire:  # fmt: skip
    """Sort a capture's IPv4 header lines into node↔node (WireGuard or not) and pod-addressed.

    TCP on ``control_ports`` (BGP's 179 in mode bgp: Calico too peers in clear
    under WireGuard) is the nodes' control plane, not pod traffic: not counted.
    """
    between, pod_addressed, other = 0, 0, []
    for line in text.splitlines():
        m = _IP_LINE.match(line)
        if not m:
            continue
        src, sport, dst, dport, rest = m.groups()
        if {src, dst} <= pods or src in pods or dst in pods:
            pod_addressed += 1
        if {src, dst} == nodes and not rest.startswith("UDP") and {sport, dport} & control_ports:
            continue
        if {src, dst} == nodes:
            between += 1
            if not (rest.startswith("UDP") and sport == dport == str(WG_PORT)):
                other.append(line)
    return Wire(node, capture.parse(text, canary=canary), between, tuple(other), pod_addressed)


@pytest.fixture(scope="module")
def leak_pods(echo_pods: EchoPods) -> tuple[Pod, Pod]:
    """The mode's shared echo pods on two nodes (the cross-node path)."""
    return echo_pods.pair("cross-node")


def _send_canary(client: Pod, server: Pod, canary: str, count: int = 5) -> echo.ProbeReport:
    argv = echo.probe_command("udp", server.ip, UDP_PORT, count=count, payload=canary,
                              connect_timeout_s=1.0, budget_s=6.0, wait_s=1.0)  # fmt: skip
    return echo.parse_probe(output(client.run(argv, 20)))


def capture_both(
    client: Pod,
    server: Pod,
    canary: str,
    during: Callable[[], None] | None = None,
    control_ports: frozenset[str] = frozenset(),
) -> tuple[list[Wire], echo.ProbeReport]:
    """Capture both nodes' underlays while ``during()`` runs (if given), then send the canary."""
    ends: list[Node] = [client.node, server.node]
    node_ips = {n.underlay_ip for n in ends}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futs = [
            pool.submit(n.run, capture.command(n.underlay_if, "not arp", CAPTURE_S), CAPTURE_S + 15)
            for n in ends
        ]
        time.sleep(1.5)  # tcpdump attaches
        if during is not None:
            during()
        report = _send_canary(client, server, canary)
        texts = [output(f.result()) for f in futs]
    wires = [
        classify(n.name, t, canary, node_ips, {client.ip, server.ip}, control_ports)
        for n, t in zip(ends, texts, strict=True)
    ]
    return wires, report


@pytest.mark.scenario(19)
def test_no_plaintext_on_the_underlay_when_encrypted(
    lab: Lab, mode: str, leak_pods: tuple[Pod, Pod], record: Recorder
) -> None:
    client, server = leak_pods
    encrypted = ModeSpec.parse(mode).encryption != "none"
    canary = f"podlab-canary-{uuid.uuid4().hex[:12]}"
    control = frozenset({"179"}) if ModeSpec.parse(mode).mode == "bgp" else frozenset()
    wires, report = capture_both(client, server, canary, control_ports=control)
    for wire in wires:
        labels = {"capture": wire.node, "encryption": "on" if encrypted else "off",
                  "control": "no" if encrypted else "yes"}  # fmt: skip
        record("leak_canary_seen_count", float(wire.raw.canary_seen), "count", labels=labels)
        record("leak_plaintext_packets_count", float(wire.pod_addressed), "count", labels=labels)
        record("leak_non_wireguard_node_packets_count", float(len(wire.not_wireguard)),
               "count", labels=labels)  # fmt: skip
    seen = "; ".join(w.describe() for w in wires)
    assert report.all_ok, f"{client} → {server}: canary not answered ({report.describe()})"
    assert all(w.raw.packets > 0 for w in wires), (
        f"a capture saw no packet while {client} sent to {server}: it cannot judge a leak ({seen})"
    )
    if encrypted:
        leaks = [w for w in wires if w.raw.canary_seen or w.pod_addressed or w.not_wireguard]
        assert not leaks, f"{mode}: traffic {client} → {server} leaked on the underlay: {seen}"
        assert all(w.between_nodes > 0 for w in wires), (
            f"{mode}: no WireGuard packets between the nodes while the pods talked: {seen}"
        )
    else:
        assert all(w.raw.canary_seen for w in wires), (
            f"negative control ({mode}, unencrypted): the canary {client} → {server} was not "
            f"seen in clear on both underlays ({seen}); the capture would miss a leak"
        )


def _peer_key(lab: Lab, node: str) -> str:
    for rec in lab.client().nodes():
        backend = (rec.model_extra or {}).get("backend") or {}
        if rec.name == node and isinstance(backend, dict) and backend.get("WireguardPublicKey"):
            return str(backend["WireguardPublicKey"])
    pytest.fail(f"node {node} publishes no WireguardPublicKey in its node record")


def _has_peer(node: Node, iface: str, pub: str) -> bool:
    res = node.run(["wg", "show", iface, "peers"], timeout_s=10)
    return res.returncode == 0 and pub in res.stdout.split()


@pytest.mark.scenario(20)
def test_traffic_to_a_removed_peer_is_dropped_not_sent_in_clear(
    lab: Lab, mode: str, leak_pods: tuple[Pod, Pod], record: Recorder
) -> None:
    from harness.agent.wireguard import iface_name

    client, server = leak_pods
    iface, pub = iface_name(client.node.name), _peer_key(lab, server.node.name)
    assert _has_peer(client.node, iface, pub), (
        f"{client.node.name} {iface} has no peer {pub[:8]}… for {server.node.name} before the test"
    )
    canary = f"podlab-strict-{uuid.uuid4().hex[:12]}"
    removed_at = 0.0

    def remove() -> None:
        nonlocal removed_at
        client.node.check(["wg", "set", iface, "peer", pub, "remove"], timeout_s=10)
        removed_at = time.monotonic()

    wires, report = capture_both(client, server, canary, during=remove)
    sent_for = time.monotonic() - removed_at
    restored, answered = None, None
    while time.monotonic() - removed_at < RESTORE_S:
        if restored is None and _has_peer(client.node, iface, pub):
            restored = time.monotonic() - removed_at
        if restored is not None and _send_canary(client, server, "podlab-after", count=1).all_ok:
            answered = time.monotonic() - removed_at
            break
        time.sleep(0.25)
    seen = "; ".join(w.describe() for w in wires)
    record("strict_dropped_attempts_count", float(report.outcomes().get("timeout", 0)), "count")
    record("strict_leaked_packets_count", float(sum(w.pod_addressed for w in wires)), "count")
    if restored is not None:
        record("strict_peer_restored_s", restored, "s")
    if answered is not None:
        record("strict_pods_talk_again_s", answered, "s")
    assert not any(w.raw.canary_seen or w.pod_addressed for w in wires), (
        f"{mode}: with {server.node.name}'s key removed on {client.node.name}, pod traffic "
        f"went out in clear: {seen}"
    )
    assert report.outcomes().get("timeout", 0) > 0, (
        f"{mode}: no attempt was dropped in the {sent_for:.1f} s after the peer was removed "
        f"({report.describe()}); the removal was not in effect"
    )
    assert restored is not None, f"the agent did not restore the peer within {RESTORE_S:.0f} s"
    assert answered is not None, (
        f"peer restored after {restored:.1f} s but {client} still cannot reach {server}"
    )
