"""Scenario 23's judging of two flows across a switch, and the switch the lockstep run
makes under them (harness/conformance/switchflows.py), without a lab."""

from __future__ import annotations

from harness.conformance import switchflows
from harness.probes.echo import FlowSamples

START = 1000.0


def _flow(answered: list[int], sent: int = 10) -> FlowSamples:
    """0.5 s buckets from START, ``sent`` requests each, ``answered[i]`` answered."""
    return FlowSamples(START, 0.5, tuple((i * 0.5, sent, ok) for i, ok in enumerate(answered)))


def test_flows_healthy_before_and_recovered_after_pass_with_their_outage_measured() -> None:
    # healthy 0-3 s, down 3-5 s (the switch at 3 s), ready at 5 s, whole again from 5.5 s
    ok = [10] * 6 + [0, 0, 2, 6] + [10] * 4
    judged = switchflows.judge({"tcp": _flow(ok), "udp": _flow(ok)}, START + 3.0, START + 5.0,
                               "udp")  # fmt: skip
    assert [j.proto for j in judged] == ["tcp", "udp"]
    for j in judged:
        assert j.problems == ()
        assert j.outage_s == 1.5  # three buckets under half answered
        assert j.events == ((3.0, "deploy starts"), (5.0, "agents ready"))
        assert j.samples[6] == (3.0, 0.0) and j.samples[9] == (4.5, 0.6)


def test_a_flow_that_never_recovers_after_ready_fails() -> None:
    j = switchflows.judge({"udp": _flow([10] * 6 + [0] * 8)}, START + 3.0, START + 5.0, "ipip")
    assert j[0].problems == ("udp flow did not recover after the switch to ipip",)
    # recovered before the agents were ready, then lost again: still not recovered after
    j = switchflows.judge({"tcp": _flow([10] * 6 + [0, 10, 10, 0, 0, 0])}, START + 3.0,
                          START + 4.5, "ipip")  # fmt: skip
    assert j[0].problems == ("tcp flow did not recover after the switch to ipip",)


def test_a_flow_unhealthy_before_the_switch_fails_whatever_came_after() -> None:
    # the first bucket may be partial (the flow's start); a later one may not
    fine = switchflows.judge({"tcp": _flow([4, 10, 10, 10] + [10] * 4)}, START + 2.0,
                             START + 2.5, "vxlan")  # fmt: skip
    assert fine[0].problems == ()
    bad = switchflows.judge({"tcp": _flow([10, 10, 9, 10] + [10] * 4)}, START + 2.0,
                            START + 2.5, "vxlan")  # fmt: skip
    assert bad[0].problems == ("tcp flow was not healthy before the switch",)
    # no whole bucket before the switch: nothing shows the flow was healthy
    none = switchflows.judge({"tcp": _flow([10] * 8)}, START + 0.4, START + 1.0, "vxlan")
    assert none[0].problems == ("tcp flow was not healthy before the switch",)


def test_the_switch_is_the_script_s_with_the_full_deploy_to_fall_back_to() -> None:
    assert switchflows.switch_argv("podlab", "lab1", "host-gw+wireguard", True) == [
        "podlab", "deploy", "lab1", "--switch", "--mode", "host-gw", "--encryption",
        "wireguard", "--quiet",
    ]  # fmt: skip
    assert switchflows.switch_argv("podlab", "lab1", "vxlan", False) == [
        "podlab", "deploy", "lab1", "--mode", "vxlan", "--encryption", "none", "--quiet",
    ]  # fmt: skip


def test_a_bad_entry_is_one_line_and_exit_2(capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["--lab", "x", "--results", "/nonexistent", "--from", "vxlan", "--to", "geneve"]
    assert switchflows.main(argv) == switchflows.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["podlab: --mode 'geneve': unknown mode 'geneve' (modes: host-gw, vxlan, udp, "
                   "bgp, ipip, calico-vxlan, cross-subnet)"]  # fmt: skip
