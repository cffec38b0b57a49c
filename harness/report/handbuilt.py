"""The throughput headline: each mode against the same pod path built by hand.

Reads the interleaved rounds of ``test_tcp_throughput_against_hand_built_path``
(scenario 28): ``throughput_bps`` with ``labels.path`` = ``pod-pod``,
``hand-built`` or ``node-node``, TCP with one stream, one record per round
(``labels.repeat``), ``labels.reference`` naming the hand-built path, or
``labels.reference_note`` saying why a mode has none. Per mode: the median and
coefficient of variation of each path, mode ÷ hand-built and mode ÷ underlay
(ratios of medians), in how many rounds the mode measured below its
reference, a verdict against the goal (≥ ``GOAL`` of the hand-built path,
judged only when both series vary by at most ``MAX_CV``), and the CPU both
iperf3 ends used per Gbit/s, hand-built ÷ mode: on a veth path the kernel's
forwarding work runs in the sender's context and is counted there, so this
follows the datapath's cost and varies far less than throughput on a busy
machine.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from harness.probes.stats import coefficient_of_variation
from harness.results.model import Measurement, RunResults

GOAL = 0.95  # a kernel mode should reach 95 % of its hand-built path
MAX_CV = 0.05  # a ratio is judged only when both series vary by at most 5 %
PATHS = ("pod-pod", "hand-built", "node-node")


@dataclass(frozen=True)
class Series:
    """One path's rounds: median (bit/s), coefficient of variation, count."""

    median_bps: float
    cv: float | None
    rounds: int


@dataclass(frozen=True)
class HandbuiltRow:
    """One mode: its three series, the two ratios and the verdict."""

    mode: str
    reference: str  # the hand-built path's name, "" when there is none
    note: str  # why there is no reference
    pod: Series | None
    handbuilt: Series | None
    underlay: Series | None
    ratio_handbuilt: float | None
    ratio_underlay: float | None
    rounds_below: int | None
    verdict: str  # "meets goal" | "below goal" | "too noisy" | "no reference"
    cpu_ratio: float | None = None  # CPU per bit, hand-built ÷ mode (1.0 = costs the same)


CPU_NAMES = ("cpu_sender_cores", "cpu_receiver_cores")


def _is_round(m: Measurement) -> bool:
    return (
        m.name in ("throughput_bps", *CPU_NAMES)
        and m.labels.get("proto", "tcp") == "tcp"
        and m.labels.get("streams", "1") == "1"
        and m.labels.get("path") in PATHS
        and "repeat" in m.labels
        and (
            "reference" in m.labels
            or "reference_note" in m.labels
            or m.labels.get("test") == "test_tcp_throughput_against_hand_built_path"
        )
    )


def _series(values: list[float]) -> Series | None:
    if not values:
        return None
    return Series(statistics.median(values), coefficient_of_variation(values), len(values))


def _verdict(ratio: float | None, pod: Series | None, ref: Series | None) -> str:
    if ratio is None or pod is None or ref is None:
        return "no reference"
    noisy = [s.cv for s in (pod, ref) if s.cv is None or s.cv > MAX_CV]
    if noisy:
        return "too noisy"
    return "meets goal" if ratio >= GOAL else "below goal"


def _ratio(a: Series | None, b: Series | None) -> float | None:
    return a.median_bps / b.median_bps if a and b and b.median_bps else None


def _cpu_per_gbit(bps: dict[int, float], cpu: dict[int, float]) -> float | None:
    """Median over rounds of the CPU both iperf3 ends used per Gbit/s received."""
    per = [cpu[r] / (v / 1e9) for r, v in bps.items() if v and r in cpu]
    return statistics.median(per) if per else None


def rows(run: RunResults) -> tuple[HandbuiltRow, ...]:
    """One row per mode that ran the hand-built comparison, in the run's mode order."""
    values: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    cpu: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    reference: dict[str, str] = {}
    note: dict[str, str] = {}
    for m in run.measurements:
        if not _is_round(m):
            continue
        rnd = int(m.labels["repeat"]) if m.labels["repeat"].isdigit() else 0
        path = m.labels["path"]
        if m.name in CPU_NAMES:
            cpu[m.mode][path][rnd] = cpu[m.mode][path].get(rnd, 0.0) + m.value
            continue
        values[m.mode][path][rnd] = m.value
        reference[m.mode] = m.labels.get("reference", reference.get(m.mode, ""))
        if m.labels.get("reference_note"):
            note[m.mode] = m.labels["reference_note"]
    order = {mode: i for i, mode in enumerate(run.modes)}
    return tuple(
        _row(mode, values[mode], cpu[mode], reference.get(mode, ""), note.get(mode, ""))
        for mode in sorted(values, key=lambda x: (order.get(x, 99), x))
    )


def _row(
    mode: str,
    by: dict[str, dict[int, float]],
    cpu: dict[str, dict[int, float]],
    reference: str,
    note: str,
) -> HandbuiltRow:
    pod, ref, under = (_series([v for _, v in sorted(by[p].items())]) for p in PATHS)
    r_ref = _ratio(pod, ref)
    below = None
    if pod and ref:
        paired = by["hand-built"]
        below = sum(1 for rnd, v in by["pod-pod"].items() if rnd in paired and v < paired[rnd])
    cost_pod = _cpu_per_gbit(by["pod-pod"], cpu["pod-pod"])
    cost_ref = _cpu_per_gbit(by["hand-built"], cpu["hand-built"])
    cpu_ratio = cost_ref / cost_pod if cost_pod and cost_ref else None
    return HandbuiltRow(mode, reference, note, pod, ref, under, r_ref, _ratio(pod, under),
                        below, _verdict(r_ref, pod, ref), cpu_ratio)  # fmt: skip
