"""Throughput against the underlay, the cited mode ordering, latency percentiles.

Conventions read here (docs/results-format.md has them for suite authors):

- ``throughput_bps`` with ``labels.path`` = "pod-pod" (default) or "node-node"
  (the underlay, measured in the same run as the mode); a mode of "underlay"
  also means node-node. ``labels.proto`` ("tcp" default, "udp") and
  ``labels.streams`` ("1" default) tell the tests apart.
- ``<family>_p50_s`` / ``_p90_s`` / ``_p99_s`` are percentiles of one family
  (``latency_p99_s``: TCP request/response round trips).

Repeats are summarised by their median. A ratio is pod-pod ÷ node-node for the
same mode and test; when a mode has no underlay figure of its own the run's
median underlay for that test is used, and the row says so.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from harness.report.fmt import fmt_bps, median, median_of
from harness.results.model import Measurement, RunResults, base_mode

UNDERLAY = "underlay"
# The ordering the seeds cite, as tiers (members of a tier are "≈"):
# Host > Calico BGP ≈ Calico IPIP > Flannel VXLAN > Flannel UDP.
CITED_TIERS: tuple[tuple[str, ...], ...] = ((UNDERLAY,), ("bgp", "ipip"), ("vxlan",), ("udp",))
MODE_TITLES = {
    UNDERLAY: "Host (underlay)",
    "bgp": "Calico BGP",
    "ipip": "Calico IPIP",
    "vxlan": "Flannel VXLAN",
    "udp": "Flannel UDP",
    "host-gw": "Flannel host-gw",
    "calico-vxlan": "Calico VXLAN",
    "cross-subnet": "Calico cross-subnet",
}
OUTSIDE_CITED = ("host-gw", "calico-vxlan", "cross-subnet")
# Two figures within this relative distance count as "≈".
ORDER_TOLERANCE = 0.10
# The test the ordering is judged on: TCP, one stream, unencrypted.
ORDER_TEST = ("tcp", "1")

_PCT = re.compile(r"^(?P<family>[a-z0-9_]+?)_p(?P<pct>50|90|99)_s$")


def _path(m: Measurement) -> str:
    return "node-node" if m.mode == UNDERLAY else m.labels.get("path", "pod-pod")


def _test(m: Measurement) -> tuple[str, str]:
    return (m.labels.get("proto", "tcp"), m.labels.get("streams", "1"))


def describe_test(test: tuple[str, str]) -> str:
    """ "TCP, 1 stream" from ("tcp", "1")."""
    proto, streams = test
    return f"{proto.upper()}, {streams} stream{'s' if streams != '1' else ''}"


@dataclass(frozen=True)
class ThroughputRow:
    """One mode × test: pod-pod median, the underlay beside it, and their ratio."""

    mode: str
    test: tuple[str, str]
    pod_bps: float | None
    underlay_bps: float | None
    ratio: float | None
    underlay_shared: bool  # the underlay figure is the run's, not this mode's own
    samples: int


def throughput(run: RunResults) -> tuple[ThroughputRow, ...]:
    """Throughput per mode and test with ratios to the underlay."""
    tput = [m for m in run.measurements if m.name == "throughput_bps"]
    pods: dict[tuple[str, tuple[str, str]], list[float]] = defaultdict(list)
    under: dict[tuple[str, tuple[str, str]], list[float]] = defaultdict(list)
    under_all: dict[tuple[str, str], list[float]] = defaultdict(list)
    for m in tput:
        if _path(m) == "node-node":
            under[(m.mode, _test(m))].append(m.value)
            under_all[_test(m)].append(m.value)
        elif _path(m) == "pod-pod":
            pods[(m.mode, _test(m))].append(m.value)
    rows = []
    for (mode, test), values in pods.items():
        own = median(under.get((mode, test), []))
        base = own if own is not None else median(under_all.get(test, []))
        pod = median(values)
        ratio = pod / base if (pod is not None and base) else None
        rows.append(ThroughputRow(mode, test, pod, base, ratio, own is None, len(values)))
    order = {m: i for i, m in enumerate(run.modes)}
    return tuple(sorted(rows, key=lambda r: (r.test, order.get(r.mode, 99), r.mode)))


@dataclass(frozen=True)
class ThroughputTable:
    """Throughput pivoted for reading: one row per mode, one column group per test."""

    tests: tuple[tuple[str, str], ...]
    rows: tuple[tuple[str, tuple[ThroughputRow | None, ...]], ...]


def throughput_table(rows: tuple[ThroughputRow, ...]) -> ThroughputTable:
    """Pivot throughput rows: modes down, tests (TCP 1 stream, …) across."""
    tests = tuple(
        sorted({r.test for r in rows}, key=lambda t: (t[0], int(t[1]) if t[1].isdigit() else 0))
    )
    modes = list(dict.fromkeys(r.mode for r in rows))
    by = {(r.mode, r.test): r for r in rows}
    return ThroughputTable(tests, tuple((m, tuple(by.get((m, t)) for t in tests)) for m in modes))


def underlay_bps(run: RunResults, test: tuple[str, str] = ORDER_TEST) -> float | None:
    """The run's median node-node throughput for one test."""
    return median_of(
        m
        for m in run.measurements
        if m.name == "throughput_bps" and _path(m) == "node-node" and _test(m) == test
    )


@dataclass(frozen=True)
class OrderRow:
    """One mode of the cited ordering: where the seeds put it, where we measured it."""

    mode: str
    title: str
    cited_rank: int | None
    bps: float | None
    ratio: float | None
    measured_rank: int | None
    verdict: str  # "matches" | "differs" | "not measured" | "outside the cited order"
    detail: str


def _relation(a: float, b: float) -> str:
    """ ">", "<" or "≈" between two figures, with ORDER_TOLERANCE as the ≈ band."""
    if abs(a - b) <= ORDER_TOLERANCE * max(abs(a), abs(b)):
        return "≈"
    return ">" if a > b else "<"


def _tier(mode: str) -> int | None:
    for i, tier in enumerate(CITED_TIERS):
        if mode in tier:
            return i
    return None


def ordering(run: RunResults) -> tuple[OrderRow, ...]:
    """Compare the measured bandwidth ordering with the cited one, mode by mode.

    A mode matches when, against every other measured mode of the cited list,
    the measured relation is the cited one: a mode cited above another must
    have measured faster (by any margin), two modes cited "≈" must lie within
    ORDER_TOLERANCE of each other.
    """
    values: dict[str, float] = {}
    under = underlay_bps(run)
    if under is not None:
        values[UNDERLAY] = under
    for row in throughput(run):
        if row.test == ORDER_TEST and "+" not in row.mode and row.pod_bps is not None:
            values[row.mode] = row.pod_bps
    ranked = sorted(values, key=lambda m: -values[m])
    rows = [_order_row(mode, values, ranked, under) for tier in CITED_TIERS for mode in tier]
    rows += [_order_row(mode, values, ranked, under) for mode in OUTSIDE_CITED if mode in values]
    return tuple(rows)


def _order_row(
    mode: str, values: dict[str, float], ranked: list[str], under: float | None
) -> OrderRow:
    tier = _tier(mode)
    bps = values.get(mode)
    ratio = bps / under if (bps is not None and under) else None
    rank = ranked.index(mode) + 1 if mode in ranked else None
    title = MODE_TITLES.get(mode, mode)
    cited = tier + 1 if tier is not None else None
    if bps is None:
        return OrderRow(mode, title, cited, None, None, None, "not measured", "")
    if tier is None:
        return OrderRow(mode, title, None, bps, ratio, rank, "outside the cited order", "")
    wrong = []
    for other, value in values.items():
        other_tier = _tier(other)
        if other == mode or other_tier is None:
            continue
        if other_tier == tier:
            want, ok = "≈", _relation(bps, value) == "≈"
        else:
            want = ">" if tier < other_tier else "<"
            ok = bps > value if want == ">" else bps < value
        if not ok:
            wrong.append(
                f"cited {mode} {want} {other}, measured {fmt_bps(bps)} vs {fmt_bps(value)}"
            )
    verdict = "differs" if wrong else "matches"
    detail = "; ".join(wrong) if wrong else "every cited relation holds"
    return OrderRow(mode, title, cited, bps, ratio, rank, verdict, detail)


def measured_order(rows: tuple[OrderRow, ...]) -> str:
    """The measured ordering as one line, "underlay > bgp ≈ ipip > vxlan > udp"."""
    measured = sorted((r for r in rows if r.bps is not None), key=lambda r: -(r.bps or 0))
    out = ""
    for prev, row in zip([None, *measured], measured, strict=False):
        if prev is not None:
            out += f" {_relation(prev.bps or 0, row.bps or 0)} "
        out += row.mode
    return out


@dataclass(frozen=True)
class LatencyRow:
    """Percentiles of one latency family for one mode and path."""

    family: str
    mode: str
    path: str
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None


def latency(run: RunResults) -> tuple[LatencyRow, ...]:
    """Every ``*_pNN_s`` family, grouped per mode and path, medians over repeats."""
    groups: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for m in run.measurements:
        match = _PCT.match(m.name)
        if match:
            path = "node-node" if m.mode == UNDERLAY else m.labels.get("path", "")
            groups[(match["family"], m.mode, path)][match["pct"]].append(m.value)
    order = {m: i for i, m in enumerate(run.modes)}
    rows = [
        LatencyRow(fam, mode, path, median(p["50"]), median(p["90"]), median(p["99"]))
        for (fam, mode, path), p in groups.items()
    ]
    return tuple(sorted(rows, key=lambda r: (r.family, order.get(r.mode, 99), r.mode, r.path)))


def latency_pairs(rows: tuple[LatencyRow, ...]) -> list[tuple[LatencyRow, LatencyRow | None]]:
    """Each pod-side latency row with the same mode's underlay (node-node) row, if any."""
    under = {(r.family, r.mode): r for r in rows if r.path == "node-node"}
    return [(r, under.get((r.family, r.mode))) for r in rows if r.path != "node-node"]


def underlay_latency(rows: list[LatencyRow]) -> LatencyRow | None:
    """One family's node-node percentiles, medians across modes (the chart's baseline)."""
    under = [r for r in rows if r.path == "node-node"]
    if not under:
        return None
    return LatencyRow(
        under[0].family,
        UNDERLAY,
        "node-node",
        median(r.p50_s for r in under if r.p50_s is not None),
        median(r.p90_s for r in under if r.p90_s is not None),
        median(r.p99_s for r in under if r.p99_s is not None),
    )


def mode_title(mode: str, br: bool = False) -> str:
    """A mode's display name ("vxlan+wireguard" → "Flannel VXLAN + wireguard").

    With ``br`` the words go on separate lines (``<br>``) for chart axes.
    """
    base = base_mode(mode)
    suffix = mode[len(base) + 1 :]
    title = MODE_TITLES.get(base, base) + (f" + {suffix}" if suffix else "")
    if br:
        title = title.replace(" + ", "<br>+ ").replace(" ", "<br>", 1)
    return title
