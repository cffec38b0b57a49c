"""ICMP echo (iputils ``ping``): command and parser.

``parse`` reads ping's summary and the error lines that tell a local refusal
("message too long": the packet is bigger than the interface MTU) from a
router's "Frag needed" and from plain loss, so an MTU check can say which one
it saw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# IPv4 + ICMP headers added to ping's -s payload.
ICMP_OVERHEAD = 28

_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) errors)?")
_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_TOO_LONG = re.compile(r"message too long, mtu=(\d+)")
_FRAG = re.compile(r"Frag needed and DF set \(mtu = (\d+)\)")


@dataclass(frozen=True)
class PingResult:
    """What one ping run saw."""

    transmitted: int
    received: int
    errors: int = 0
    rtt_avg_s: float | None = None
    rtt_max_s: float | None = None
    local_mtu: int | None = None  # "local error: message too long, mtu=N"
    path_mtu: int | None = None  # a router's "Frag needed ... (mtu = N)"
    unreachable: bool = False

    @property
    def lost(self) -> int:
        return self.transmitted - self.received

    @property
    def ok(self) -> bool:
        """Every echo answered."""
        return self.transmitted > 0 and self.received == self.transmitted

    def describe(self) -> str:
        """A short phrase for assertion messages: "3/3 lost (frag needed, mtu 1400)"."""
        text = f"{self.lost}/{self.transmitted} lost"
        why = []
        if self.local_mtu:
            why.append(f"message too long for local mtu {self.local_mtu}")
        if self.path_mtu:
            why.append(f"frag needed, path mtu {self.path_mtu}")
        if self.unreachable:
            why.append("destination unreachable")
        return f"{text} ({', '.join(why)})" if why else text


def command(
    target: str,
    count: int = 3,
    interval_s: float = 0.2,
    wait_s: float = 2.0,
    size: int | None = None,
    dont_fragment: bool = False,
) -> list[str]:
    """argv for ``count`` echoes; ``size`` is the ICMP payload (packet = size + 28)."""
    argv = ["ping", "-n", "-c", str(count), "-i", f"{interval_s:g}", "-W", f"{wait_s:g}"]
    if size is not None:
        argv += ["-s", str(size)]
    if dont_fragment:
        argv += ["-M", "do"]
    return [*argv, target]


def payload_for(packet_size: int) -> int:
    """The ``-s`` payload that makes an IPv4 packet of exactly ``packet_size`` bytes."""
    return packet_size - ICMP_OVERHEAD


def parse(output: str) -> PingResult:
    """Parse ping's combined stdout/stderr; an unparseable run counts as 0 sent."""
    summary = _SUMMARY.search(output)
    if not summary:
        return PingResult(0, 0)
    rtt = _RTT.search(output)
    too_long = _TOO_LONG.search(output)
    frag = _FRAG.search(output)
    return PingResult(
        transmitted=int(summary[1]),
        received=int(summary[2]),
        errors=int(summary[3] or 0),
        rtt_avg_s=float(rtt[2]) / 1000 if rtt else None,
        rtt_max_s=float(rtt[3]) / 1000 if rtt else None,
        local_mtu=int(too_long[1]) if too_long else None,
        path_mtu=int(frag[1]) if frag else None,
        unreachable="Unreachable" in output,
    )
