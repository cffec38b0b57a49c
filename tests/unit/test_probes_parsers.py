"""Probe parsers on output captured from real runs (tests/unit/data/probes/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.probes import agentlog, capture, echo, iperf3, ping

DATA = Path(__file__).parent / "data" / "probes"
REFUSED = "[Errno 111] Connection refused"
UNREACH = "[Errno 101] Network is unreachable"


def text(name: str) -> str:
    return (DATA / name).read_text()


def test_ping_all_answered() -> None:
    r = ping.parse(text("ping_ok.txt"))
    assert (r.transmitted, r.received, r.ok) == (3, 3, True)
    assert r.rtt_avg_s == pytest.approx(0.054e-3)
    assert r.describe() == "0/3 lost"


def test_ping_silent_loss_is_loss_without_reason() -> None:
    r = ping.parse(text("ping_loss.txt"))
    assert (r.transmitted, r.received, r.ok, r.local_mtu, r.path_mtu) == (3, 0, False, None, None)
    assert r.describe() == "3/3 lost"


def test_ping_frag_needed_names_the_path_mtu() -> None:
    r = ping.parse(text("ping_fragneeded.txt"))
    assert (r.received, r.errors, r.path_mtu, r.local_mtu) == (0, 2, 1400, 1400)
    assert "frag needed, path mtu 1400" in r.describe()


def test_ping_too_long_for_local_mtu() -> None:
    r = ping.parse(text("ping_toolong.txt"))
    assert (r.received, r.local_mtu, r.path_mtu) == (0, 1500, None)


def test_ping_df_of_exact_size_passes() -> None:
    assert ping.parse(text("ping_df_ok.txt")).ok


def test_ping_unreachable() -> None:
    r = ping.parse(text("ping_unreach.txt"))
    assert r.unreachable and not r.ok


def test_ping_garbage_counts_as_nothing_sent() -> None:
    r = ping.parse("ping: unknown host\n")
    assert (r.transmitted, r.ok) == (0, False)


def test_ping_command_sets_payload_for_packet_size() -> None:
    argv = ping.command("10.0.0.1", count=2, size=ping.payload_for(1450), dont_fragment=True)
    assert argv[-1] == "10.0.0.1"
    assert argv[argv.index("-s") + 1] == "1422"
    assert argv[argv.index("-M") + 1] == "do"


def test_iperf3_tcp_single_stream() -> None:
    r = iperf3.parse(text("iperf3_tcp1.json"))
    assert (r.proto, r.streams, r.retransmits, r.lost_percent) == ("tcp", 1, 29695, None)
    assert r.received_bps == pytest.approx(71527800693.18198)
    assert r.sender_cpu_cores == pytest.approx(0.73498933861421)
    assert r.receiver_cpu_cores == pytest.approx(0.52604600768878086)


def test_iperf3_tcp_parallel_streams() -> None:
    r = iperf3.parse(text("iperf3_tcp2.json"))
    assert (r.streams, r.retransmits) == (2, 2)


def test_iperf3_udp_loss_comes_from_the_receiver() -> None:
    r = iperf3.parse(text("iperf3_udp.json"))
    assert (r.proto, r.retransmits) == ("udp", None)
    assert r.lost_percent == pytest.approx(0.12946031232300348)
    assert r.received_bps == pytest.approx(199648289.27849865)


def test_iperf3_error_is_raised_with_its_message() -> None:
    with pytest.raises(iperf3.IperfError, match="unable to connect to server"):
        iperf3.parse(text("iperf3_err.json"))


def test_iperf3_no_json() -> None:
    with pytest.raises(iperf3.IperfError, match="no JSON"):
        iperf3.parse("iperf3: error - unable to connect\n")


def test_iperf3_client_command() -> None:
    argv = iperf3.client_command("10.0.0.2", 5301, seconds=3, streams=4, udp=True, udp_bitrate="0")
    assert argv[:3] == ["iperf3", "-c", "10.0.0.2"]
    assert argv[argv.index("-P") + 1] == "4" and argv[argv.index("-b") + 1] == "0"
    assert "-J" in argv and "-u" in argv


@pytest.mark.parametrize(
    ("name", "outcome", "described"),
    [
        ("netcheck_tcp_ok.json", "success", "2/2 answered"),
        ("netcheck_udp_ok.json", "success", "2/2 answered"),
        ("netcheck_tcp_refused.json", "refused", f"1/1 lost (refused 1; {REFUSED})"),
        ("netcheck_udp_refused.json", "refused", f"1/1 lost (refused 1; {REFUSED})"),
        ("netcheck_tcp_timeout.json", "timeout", "2/2 lost (timeout 2; timed out)"),
        ("netcheck_tcp_unreach.json", "unreachable", f"1/1 lost (unreachable 1; {UNREACH})"),
        ("netcheck_http_apperr.json", "app-error", "1/1 lost (app-error 1; srv-b GET / HTTP/1.0)"),
    ],
)  # fmt: skip
def test_probe_outcomes_are_classified(name: str, outcome: str, described: str) -> None:
    report = echo.parse_probe(text(name))
    assert {a.outcome for a in report.attempts} == {outcome}
    assert report.describe() == described


def test_probe_replies_name_the_server() -> None:
    report = echo.parse_probe(text("netcheck_tcp_ok.json"))
    assert report.all_ok and all(r.split()[0] == "srv-b" for r in report.replies())


def test_probe_parse_takes_the_last_json_line_after_noise() -> None:
    noisy = "Warning: something\n" + text("netcheck_udp_ok.json") + "\nstderr line\n"
    assert echo.parse_probe(noisy).successes == 2


def test_probe_output_without_json_is_an_error() -> None:
    with pytest.raises(echo.ProbeOutputError, match="No module named"):
        echo.parse_probe("/usr/bin/python: No module named harness\n")


def test_round_trips() -> None:
    rr = echo.parse_rr(text("netcheck_rr.json"))
    assert len(rr.rtts_s) == 5 and not rr.error


def test_reach_reports_never_reached_as_none() -> None:
    first = echo.parse_reach(text("netcheck_reach.json"))
    assert first["10.9.2.2:7009"] is None
    assert first["10.9.2.2:7001"] == pytest.approx(1795294705.2012339)


def test_flow_samples_outage_and_recovery() -> None:
    flow = echo.parse_flow(text("netcheck_flow.json"))
    assert (flow.sent, flow.answered, flow.outage_s()) == (24, 24, 0.0)
    broken = echo.FlowSamples(0.0, 0.5, ((0.0, 10, 10), (0.5, 10, 2), (1.0, 10, 0), (1.5, 10, 10)))
    assert broken.outage_s() == 1.0
    assert broken.recovered_after(0.6) == pytest.approx(0.9)
    assert broken.recovered_after(2.0) is None


def test_capture_counts_packets_and_finds_the_canary() -> None:
    cap = capture.parse(text("tcpdump_udp.txt"), canary="podlab-probe 1")
    assert cap.packets == 4 and cap.canary_seen
    assert not capture.parse(text("tcpdump_udp.txt"), canary="secret-xyz").canary_seen
    assert capture.parse("", canary="x").packets == 0


def test_agent_log_scan_counts_errors_and_tracebacks_since_a_moment() -> None:
    log = (
        "2026-11-21 10:00:00,100 INFO podlab.agent: started\n"
        "2026-11-21 10:00:01,000 ERROR podlab.agent: old error\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1\n'
        "2026-11-21 10:05:00,250 WARNING podlab.agent: etcd slow\n"
        "2026-11-21 10:05:01,000 ERROR podlab.reconcile: route add failed\n"
        "Traceback (most recent call last):\n"
    )
    since = agentlog._stamp(agentlog._STAMP.match("2026-11-21 10:04:00 X "))  # type: ignore[arg-type]
    found = agentlog.scan(log, since)
    assert found.tracebacks == 1
    assert found.errors == ("2026-11-21 10:05:01,000 ERROR podlab.reconcile: route add failed",)
    assert agentlog.scan(log, 0.0).tracebacks == 2
    assert agentlog.scan("2026-11-21 10:00:00,100 INFO a: ok\n", 0.0).clean
