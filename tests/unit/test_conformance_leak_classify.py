"""The leak test's capture classifier: what counts as WireGuard, a leak, or node↔node."""

from __future__ import annotations

from harness.conformance.suites.test_encryption import StrictWindow, classify, parse_strict
from harness.probes.echo import Attempt, ProbeReport

NODES = {"10.100.0.2", "10.100.0.3"}
PODS = {"10.244.1.5", "10.244.2.7"}
WG = "1700000000.000001 IP 10.100.0.2.51820 > 10.100.0.3.51820: UDP, length 148"
PLAIN = "1700000000.000002 IP 10.244.1.5.40000 > 10.244.2.7.8081: UDP, length 30"
VXLAN = "1700000000.000003 IP 10.100.0.2.33000 > 10.100.0.3.8472: OTV, flags [I] (0x08)"
ETCD = "1700000000.000004 IP 10.100.0.1.2379 > 10.100.0.2.50000: Flags [P.], length 10"


def test_wireguard_only_between_the_nodes_is_clean() -> None:
    wire = classify("n1", "\n".join([WG, WG, ETCD]), "canary-x", NODES, PODS)
    assert (wire.between_nodes, wire.not_wireguard, wire.pod_addressed) == (2, (), 0)
    assert wire.raw.packets == 3 and not wire.raw.canary_seen


def test_pod_addresses_and_other_node_traffic_are_flagged() -> None:
    text = "\n".join([WG, PLAIN, "  canary-x payload", VXLAN])
    wire = classify("n1", text, "canary-x", NODES, PODS)
    assert wire.pod_addressed == 1
    assert wire.not_wireguard == (VXLAN,)
    assert wire.raw.canary_seen


BGP = "1700000000.000005 IP 10.100.0.2.179 > 10.100.0.3.55255: Flags [P.], length 19: BGP"


def test_bgp_control_traffic_counts_only_where_it_is_not_expected() -> None:
    text = "\n".join([WG, BGP])
    in_bgp = classify("n1", text, "c", NODES, PODS, control_ports=frozenset({"179"}))
    elsewhere = classify("n1", text, "c", NODES, PODS)
    assert (in_bgp.between_nodes, in_bgp.not_wireguard) == (1, ())
    assert elsewhere.not_wireguard == (BGP,)


# -- strict mode: which tries count ---------------------------------------------------


def _report(*outcomes: str) -> ProbeReport:
    return ProbeReport("udp", "10.244.2.7", 8081, tuple(Attempt(o, 1.0) for o in outcomes))


def test_a_strict_try_counts_only_while_the_removal_is_seen_before_and_after() -> None:
    held = StrictWindow(0.0, True, True, 4.0, _report("timeout", "timeout", "timeout"))
    assert not held.void and held.dropped() == 3
    # the agent put the peer back during the probe: it proves nothing either way
    restored = StrictWindow(0.0, True, False, 4.0, _report("timeout", "success", "success"))
    assert restored.void
    # back before the probe could start: not probed at all
    assert StrictWindow(0.0, False, False, 0.0, None).void


def test_a_drop_is_a_timeout_or_an_unreachable_never_an_answer_or_a_refusal() -> None:
    kernel = StrictWindow(0.0, True, True, 4.0, _report("unreachable", "unreachable", "timeout"))
    assert kernel.dropped() == 3  # kernel WireGuard: ICMP host unreachable, nothing sent
    leaked = StrictWindow(0.0, True, True, 4.0, _report("timeout", "success", "refused"))
    assert leaked.dropped() == 1  # an answer and a refusal both reached the other side


PROBE = (
    '{"proto": "udp", "target": "10.244.2.7", "port": 8081, "attempts": ['
    '{"outcome": "timeout", "error": "timed out", "rtt_s": 1.0}, '
    '{"outcome": "timeout", "error": "timed out", "rtt_s": 1.0}]}'
)


def test_the_node_side_strict_try_is_read_back() -> None:
    held = parse_strict(f"removed 100.5\nbefore absent\n{PROBE}\nafter 0 103.0\n")
    assert not held.void and held.held_s == 2.5 and held.dropped() == 2
    back = parse_strict(f"removed 100.5\nbefore absent\n{PROBE}\nafter 1 103.0\n")
    assert back.void  # the agent restored the peer during the probe
    early = parse_strict("removed 100.5\nbefore present\n")
    assert early.void and early.report is None
