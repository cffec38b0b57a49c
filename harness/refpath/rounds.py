"""Interleaved rounds: measure contenders alternately, summarise by median and CV.

On a shared machine a neighbour's burst lands on whichever measurement runs at
that moment. Measuring a mode and its reference once each compares two
different machines; running them alternately in several short rounds, and
dividing medians, compares the same machine twice. Each round rotates the
order (A B C, B C A, C A B, …) so no contender always runs first, right after
a pause, or last.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from harness.exec import run
from harness.probes import iperf3
from harness.probes.stats import coefficient_of_variation

T = TypeVar("T")


def interleave(
    contenders: Sequence[tuple[str, Callable[[], T]]], rounds: int
) -> dict[str, list[T]]:
    """Run every contender once per round, in an order rotated by the round number."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    out: dict[str, list[T]] = {name: [] for name, _ in contenders}
    n = len(contenders)
    for r in range(rounds):
        for i in range(n):
            name, fn = contenders[(i + r) % n]
            out[name].append(fn())
    return out


@dataclass(frozen=True)
class Series:
    """One contender's figures over the rounds (bit/s or any positive quantity)."""

    name: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def cv(self) -> float | None:
        return coefficient_of_variation(self.values)


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` measured in the same rounds: ratio of medians, and per round."""

    a: Series
    b: Series

    @property
    def ratio(self) -> float | None:
        return self.a.median / self.b.median if self.b.median else None

    @property
    def round_ratios(self) -> tuple[float, ...]:
        return tuple(x / y for x, y in zip(self.a.values, self.b.values, strict=True) if y)

    @property
    def rounds_below(self) -> int:
        """Rounds in which ``a`` measured less than ``b`` (``5/5`` is a clear verdict)."""
        return sum(1 for x, y in zip(self.a.values, self.b.values, strict=True) if x < y)


@dataclass(frozen=True)
class Target:
    """One contender of an iperf3 round: a client namespace and a server address.

    ``netns`` is a path (``/run/netns/x``, a pod's bind mount) or a name under
    ``/run/netns``; empty = the namespace this process runs in (node→node).
    """

    name: str
    netns: str
    ip: str
    port: int

    @staticmethod
    def parse(text: str) -> Target:
        """``NAME=NETNS@IP:PORT`` (NETNS may be empty) as the CLI takes it."""
        name, sep, rest = text.partition("=")
        netns, sep2, addr = rest.rpartition("@")
        ip, sep3, port = addr.rpartition(":")
        if not (sep and sep2 and sep3 and name and ip and port.isdigit()):
            raise ValueError(f"target {text!r}: want NAME=NETNS@IP:PORT (NETNS may be empty)")
        return Target(name, netns, ip, int(port))

    def argv(self, seconds: int, streams: int = 1) -> list[str]:
        cmd = iperf3.client_command(self.ip, self.port, seconds, streams)
        if not self.netns:
            return cmd
        path = self.netns if "/" in self.netns else f"/run/netns/{self.netns}"
        return ["nsenter", f"--net={path}", *cmd]


def iperf_once(target: Target, seconds: int, tries: int = 3) -> iperf3.IperfResult:
    """One iperf3 TCP run; a server still busy with the previous test is retried."""
    err: Exception | None = None
    for _ in range(tries):
        res = run(target.argv(seconds), timeout=seconds + 20, check=False)
        try:
            return iperf3.parse(res.stdout or res.stderr)
        except iperf3.IperfError as exc:
            err = exc
            time.sleep(0.3)
    raise RuntimeError(f"iperf3 to {target.name} {target.ip}:{target.port}: {err}")


def iperf_rounds(
    targets: Sequence[Target], n_rounds: int, seconds: int
) -> dict[str, list[iperf3.IperfResult]]:
    """iperf3 TCP, one stream, to every target in each of ``n_rounds`` rotated rounds."""
    return interleave(
        [(t.name, lambda t=t: iperf_once(t, seconds)) for t in targets],  # type: ignore[misc]
        n_rounds,
    )
