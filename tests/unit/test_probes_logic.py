"""Pure logic of the probes: MTU expectations and search, percentiles, routes, commands."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.probes import echo, mtu, netcheck
from harness.probes.stats import percentile, percentiles


@pytest.mark.parametrize(
    ("mode", "encryption", "want"),
    [
        ("host-gw", "none", 1500), ("bgp", "none", 1500), ("ipip", "none", 1480),
        ("udp", "none", 1472), ("vxlan", "none", 1450), ("calico-vxlan", "none", 1450),
        ("vxlan", "wireguard", 1420), ("bgp", "wireguard", 1440),
    ],
)  # fmt: skip
def test_expected_pod_mtu_follows_the_spec(mode: str, encryption: str, want: int) -> None:
    assert mtu.expected_pod_mtu(mode, 1500, encryption) == want


def test_expected_pod_mtu_unknown_mode() -> None:
    with pytest.raises(KeyError, match="geneve"):
        mtu.expected_pod_mtu("geneve", 1500)


@given(st.integers(min_value=576, max_value=9000))
def test_largest_passing_finds_the_threshold(limit: int) -> None:
    calls: list[int] = []

    def passes(n: int) -> bool:
        calls.append(n)
        return n <= limit

    assert mtu.largest_passing(passes, 576, 9000) == limit
    assert len(calls) <= 16


def test_largest_passing_none_when_even_the_smallest_fails() -> None:
    assert mtu.largest_passing(lambda n: False, 576, 1500) is None


def test_percentile_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentiles(samples) == {50: 50.0, 90: 90.0, 99: 99.0}
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.0


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_percentiles_are_observed_and_ordered(samples: list[float]) -> None:
    p = percentiles(samples)
    assert all(v in samples for v in p.values())
    assert p[50] <= p[90] <= p[99]


ROUTES = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "flannel.1\t00025B0A\t00025B0A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
)


def test_route_present_matches_destination_and_mask() -> None:
    assert netcheck.route_present(ROUTES, "10.91.2.0/24")
    assert netcheck.route_present(ROUTES, "0.0.0.0/0")
    assert not netcheck.route_present(ROUTES, "10.91.2.0/25")
    assert not netcheck.route_present(ROUTES, "10.91.3.0/24")


def test_classify_tells_drops_from_rejects() -> None:
    assert netcheck.classify(TimeoutError()) == netcheck.TIMEOUT
    assert netcheck.classify(ConnectionRefusedError()) == netcheck.REFUSED
    assert netcheck.classify(OSError(113, "No route to host")) == netcheck.UNREACHABLE
    assert netcheck.classify(OSError(5, "I/O error")) == netcheck.APP_ERROR


def test_commands_run_netcheck_with_the_node_venv() -> None:
    argv = echo.probe_command("udp", "10.244.1.2", 8081, count=5)
    assert argv[:3] == [echo.NODE_PYTHON, "-m", "harness.probes.netcheck"]
    parsed = netcheck.parser().parse_args(argv[3:])
    assert (parsed.proto, parsed.target, parsed.port, parsed.count) == (
        "udp",
        "10.244.1.2",
        8081,
        5,
    )
    for argv in (
        echo.rr_command("10.0.0.1", 80, 10),
        echo.reach_command([("10.0.0.1", 9), ("10.0.0.2", 9)], 30, refused_ok=True),
        echo.flow_command("udp", "10.0.0.1", 8081, 12),
        echo.serve_command(18080, "c1-w1", 30),
        echo.routewait_command("10.244.2.0/24", False, 60),
    ):
        netcheck.parser().parse_args(argv[3:])  # every argv is one netcheck accepts


def test_stream_parses_who_answered_and_when() -> None:
    samples = '[[0.0, "a"], [0.05, "timeout"], [0.1, "b"], [0.2, "a"]]'
    out = 'noise\n{"start": 100.0, "samples": ' + samples + "}"
    s = echo.parse_stream(out)
    assert s.samples[1] == (100.05, "timeout")
    assert s.failed({"a", "b"}) == [(100.05, "timeout")]
    assert s.last({"a"}) == 100.2 and s.last({"c"}) is None
    argv = echo.stream_command("10.96.0.9", 80, 8, 0.05, 1.0)
    assert argv[-8:] == ["--port", "80", "--duration", "8", "--interval", "0.05", "--timeout", "1"]


def test_stream_runs_open_loop_against_a_closed_port() -> None:
    args = netcheck.parser().parse_args(
        ["stream", "--target", "127.0.0.1", "--port", "9", "--duration", "0.3",
         "--interval", "0.1", "--timeout", "0.5"]
    )  # fmt: skip
    got = netcheck.stream(args)
    assert [w for _, w in got["samples"]] == ["refused"] * 3
