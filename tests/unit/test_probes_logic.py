"""Pure logic of the probes: MTU expectations and search, percentiles, routes, commands."""

from __future__ import annotations

import socket
import socketserver
import threading
from pathlib import Path

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


class _Answering:
    """A TCP server on 127.0.0.1 answering each line with ``srv <line>`` (the echo
    workload's reply), started on demand on a port chosen beforehand."""

    def __init__(self) -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"srv " + self.rfile.readline())

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _stream(port: int, duration: float, *extra: str) -> dict:  # type: ignore[type-arg]
    args = netcheck.parser().parse_args(
        ["stream", "--target", "127.0.0.1", "--port", str(port), "--duration", f"{duration}",
         "--interval", "0.02", "--timeout", "0.5", *extra]
    )  # fmt: skip
    return netcheck.stream(args)


def test_stream_ready_file_follows_the_first_answer(tmp_path: Path) -> None:
    srv = _Answering()
    ready = tmp_path / "ready"
    refused = _stream(srv.port, 0.4, "--ready-file", str(ready), "--ready-after", "0")
    assert {w for _, w in refused["samples"]} == {"refused"}
    assert not ready.exists(), "no request was answered: the stream is not ready"
    srv.start()
    try:
        got = _stream(srv.port, 0.8, "--ready-file", str(ready), "--ready-after", "0.3")
    finally:
        srv.stop()
    first = got["start"] + min(t for t, w in got["samples"] if w == "srv")
    assert ready.exists()
    assert ready.stat().st_mtime >= first + 0.3 - 0.05  # mtime's coarse clock: a margin


def test_stream_settled_file_ends_a_failure_episode(tmp_path: Path) -> None:
    srv = _Answering()
    settled = tmp_path / "settled"
    argv = ["--settled-file", str(settled), "--settled-after", "0.3"]
    threading.Timer(0.3, srv.start).start()  # refused for 0.3 s, then answered
    try:
        got = _stream(srv.port, 1.5, *argv)
    finally:
        srv.stop()
    bad = [t for t, w in got["samples"] if w != "srv"]
    assert bad and any(w == "srv" for _, w in got["samples"])
    assert settled.exists()
    assert settled.stat().st_mtime >= got["start"] + max(bad) + 0.3 - 0.05
    settled.unlink()
    srv = _Answering()
    srv.start()
    try:
        _stream(srv.port, 0.6, *argv)
    finally:
        srv.stop()
    assert not settled.exists(), "no failure, no episode: nothing settled"


def test_ready_and_settled_arguments_reach_netcheck() -> None:
    argv = echo.stream_command("10.96.0.9", 80, 8, stop_file="/run/s",
                               ready=("/run/r", 1.0), settled=("/run/t", 2.0))  # fmt: skip
    a = netcheck.parser().parse_args(argv[3:])
    assert (a.stop_file, a.ready_file, a.ready_after) == ("/run/s", "/run/r", 1.0)
    assert (a.settled_file, a.settled_after) == ("/run/t", 2.0)
    a = netcheck.parser().parse_args(echo.flow_command("tcp", "10.0.0.1", 80, 5,
                                                       ready=("/run/r", 2.0))[3:])  # fmt: skip
    assert (a.ready_file, a.ready_after, a.stop_file) == ("/run/r", 2.0, "")
