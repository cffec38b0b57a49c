"""Cross-cluster throughput in interleaved rounds: pod→pod against node→node across
the same router, for scenario 24 and ``bench/bench_mesh_throughput.py``.

On a shared machine a neighbour's burst lands on whichever measurement runs at
that moment, so one run of each compares two different machines. Each round
runs every contender once, in an order rotated round by round (A B, B A, …);
the comparison is the ratio of the medians, with each series' coefficient of
variation and the number of rounds the pod path was below the node path.
The rotation is ``harness.refpath.rounds.interleave``; the summaries here keep
their own definitions (population CV, 0 for one value) that scenario 24 reports.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.conformance.remote import Node, output
from harness.probes import iperf3
from harness.refpath.rounds import interleave


@dataclass(frozen=True)
class Series:
    """One contender's figures over the rounds."""

    name: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def cv(self) -> float:
        """Coefficient of variation (population stdev / mean); 0 for one value."""
        mean = statistics.fmean(self.values)
        return statistics.pstdev(self.values) / mean if mean and len(self.values) > 1 else 0.0


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` measured in the same rounds."""

    a: Series
    b: Series

    @property
    def ratio(self) -> float:
        return self.a.median / self.b.median if self.b.median else 0.0

    @property
    def rounds_below(self) -> int:
        return sum(1 for x, y in zip(self.a.values, self.b.values, strict=True) if x < y)

    def describe(self) -> str:
        return (
            f"{self.a.name} {self.a.median / 1e9:.2f} Gbit/s (CV {self.a.cv:.0%}) vs "
            f"{self.b.name} {self.b.median / 1e9:.2f} Gbit/s (CV {self.b.cv:.0%}): "
            f"{self.ratio:.3f}x, below in {self.rounds_below}/{len(self.a.values)} rounds"
        )


@dataclass(frozen=True)
class Target:
    """One contender: a client (anything with ``run(argv, timeout_s)``: a Pod, a Node or
    an ``InNetns``) and an iperf3 server on ``server`` (inside ``netns`` if set) at
    ``ip``:``port``; ``serve`` False when something else started that server (a
    hand-built reference starts its own)."""

    name: str
    client: Any
    server: Node
    netns: str | None
    ip: str
    port: int
    serve: bool = True


@dataclass(frozen=True)
class InNetns:
    """A client in a named network namespace of a node (a hand-built reference's pod)."""

    node: Node
    netns: str

    def run(self, argv: Sequence[str], timeout_s: float = 30.0) -> Any:
        return self.node.run(["ip", "netns", "exec", self.netns, *argv], timeout_s)


def start_servers(targets: Sequence[Target], lifetime_s: float) -> None:
    """One iperf3 server per target that serves every round (no ``-1``)."""
    for t in targets:
        if not t.serve:
            continue
        argv = ["iperf3", "-s", "-p", str(t.port)]
        t.server.start(["ip", "netns", "exec", t.netns, *argv] if t.netns else argv, lifetime_s)
    time.sleep(0.5)


def iperf_once(t: Target, seconds: int, tries: int = 3) -> float:
    """One TCP single-stream run's goodput (bit/s); a server still busy is retried."""
    return iperf_run(t, seconds, tries).received_bps


def cpu_per_gbit(r: iperf3.IperfResult) -> float:
    """CPU cores both iperf3 ends used per Gbit/s: on a veth path the kernel's
    forwarding, netfilter and encapsulation work runs in their contexts, so this is
    the path's cost per bit, and it varies far less than throughput on a busy machine."""
    return (r.sender_cpu_cores + r.receiver_cpu_cores) / (r.received_bps / 1e9)


def iperf_run(t: Target, seconds: int, tries: int = 3) -> iperf3.IperfResult:
    """One TCP single-stream run (``iperf3 -J``); a server still busy is retried."""
    err: Exception | None = None
    for _ in range(tries):
        res = t.client.run(iperf3.client_command(t.ip, t.port, seconds, 1), seconds + 20)
        try:
            return iperf3.parse(res.stdout or output(res))
        except iperf3.IperfError as exc:
            err = exc
            time.sleep(0.5)
    raise RuntimeError(f"iperf3 {t.name} to {t.ip}:{t.port}: {err}")


def rounds(targets: Sequence[Target], n_rounds: int, seconds: int) -> dict[str, Series]:
    """Every target once per round, rotated; servers started first, for all rounds."""
    start_servers(targets, lifetime_s=n_rounds * len(targets) * (seconds + 8) + 30)
    got = interleave(
        [(t.name, lambda t=t: iperf_once(t, seconds)) for t in targets],  # type: ignore[misc]
        n_rounds,
    )
    return {name: Series(name, tuple(v)) for name, v in got.items()}
