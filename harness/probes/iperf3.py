"""iperf3 with JSON output (``-J``): server and client commands, and the parser.

Figures come out in the results' units: bits per second, a retransmit count,
UDP loss in percent, and CPU in cores (iperf3's ``cpu_utilization_percent`` is
the process's user+system time over wall time, so 100 % is one core busy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

DEFAULT_PORT = 5201


@dataclass(frozen=True)
class IperfResult:
    """One iperf3 client run, as the receiver saw it (goodput)."""

    proto: str
    streams: int
    seconds: float
    received_bps: float
    sent_bps: float
    retransmits: int | None  # TCP only
    lost_percent: float | None  # UDP only
    sender_cpu_cores: float
    receiver_cpu_cores: float


class IperfError(ValueError):
    """iperf3 reported an error (it still prints JSON), or printed no JSON at all."""


def server_command(port: int = DEFAULT_PORT, lifetime_s: int = 60) -> list[str]:
    """A one-shot server that exits after one test, or after ``lifetime_s`` whatever happens."""
    return ["timeout", str(lifetime_s), "iperf3", "-s", "-1", "-p", str(port)]


def client_command(
    target: str,
    port: int = DEFAULT_PORT,
    seconds: int = 5,
    streams: int = 1,
    udp: bool = False,
    udp_bitrate: str = "1G",
) -> list[str]:
    """A JSON-reporting client; UDP sends at ``udp_bitrate`` (iperf3's default is 1 Mbit/s)."""
    argv = ["iperf3", "-c", target, "-p", str(port), "-J", "-t", str(seconds)]
    argv += ["-P", str(streams), "--connect-timeout", "3000"]
    if udp:
        argv += ["-u", "-b", udp_bitrate]
    return argv


def parse(output: str) -> IperfResult:
    """Parse ``iperf3 -J`` output; raise IperfError with iperf3's own message on failure."""
    try:
        data = json.loads(output)
    except ValueError as exc:
        raise IperfError(f"iperf3 printed no JSON: {output.strip()[:200]!r}") from exc
    if data.get("error"):
        raise IperfError(f"iperf3: {data['error']}")
    end = data.get("end") or {}
    start = data.get("start", {}).get("test_start", {})
    udp = start.get("protocol", "").upper() == "UDP"
    sent = end.get("sum_sent") or end.get("sum") or {}
    received = end.get("sum_received") or end.get("sum") or {}
    if not received:
        raise IperfError("iperf3 JSON has no end.sum_received")
    cpu = end.get("cpu_utilization_percent") or {}
    # With -R the client is the receiver; we never use -R, so host = sender.
    return IperfResult(
        proto="udp" if udp else "tcp",
        streams=int(start.get("num_streams") or len(end.get("streams") or []) or 1),
        seconds=float(received.get("seconds") or sent.get("seconds") or 0.0),
        received_bps=float(received.get("bits_per_second", 0.0)),
        sent_bps=float(sent.get("bits_per_second", 0.0)),
        retransmits=None if udp else int(sent.get("retransmits", 0)),
        lost_percent=float(received.get("lost_percent", 0.0)) if udp else None,
        sender_cpu_cores=float(cpu.get("host_total", 0.0)) / 100,
        receiver_cpu_cores=float(cpu.get("remote_total", 0.0)) / 100,
    )
