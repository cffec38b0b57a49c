"""The SLIs of a ``podlab load`` run: percentiles, thresholds, clusterloader2's summary shape.

Pure functions over numbers the run collected (tested without a lab). Thresholds
are clusterloader2's (docs/load.md names each source): pod startup p99 ≤ 5 s
(the SIG-scalability SLO), mutating and single-object calls p99 ≤ 1 s, list calls
p99 ≤ 30 s, network programming latency p99 ≤ 30 s (CL2's load test), DNS lookup
p50 ≤ 20 ms and p99 ≤ 100 ms with ≤ 0.1 % errors (CL2's DNS module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.probes.stats import percentile as percentile  # the report's and SLOs' definition
from harness.probes.stats import percentiles

QUANTILES = (50, 90, 99)


@dataclass(frozen=True)
class Threshold:
    """What one SLI is judged against: a quantile's bound, in the SLI's unit."""

    quantile: int
    bound: float
    source: str


# per SLI family (results names are <family>_p<q>_s)
THRESHOLDS: dict[str, Threshold] = {
    "pod_startup": Threshold(99, 5.0, "SIG-scalability pod startup SLO"),
    "api_mutating": Threshold(99, 1.0, "SIG-scalability API call SLO (single object)"),
    "api_get": Threshold(99, 1.0, "SIG-scalability API call SLO (single object)"),
    "api_list": Threshold(99, 30.0, "SIG-scalability API call SLO (cluster scope)"),
    "network_programming": Threshold(99, 30.0, "clusterloader2 load test"),
    "network_programming_probe": Threshold(99, 30.0, "clusterloader2 load test"),
    "dns_lookup": Threshold(99, 0.1, "clusterloader2 DNS module (p50 ≤ 0.02 s too)"),
}
DNS_P50_S = 0.02
DNS_ERRORS_PERCENT = 0.1


def quantiles(values: Sequence[float]) -> dict[int, float]:
    """p50/p90/p99, nearest rank (CL2's ``latencyMetric`` picks the same rank)."""
    return percentiles(values, QUANTILES)


def histogram_quantile(q: float, le: Sequence[float], counts: Sequence[float]) -> float:
    """Prometheus' ``histogram_quantile``: linear within the bucket that holds rank q.

    ``counts`` are cumulative (≤ each bound); the first bucket starts at 0; a rank
    above the last bound answers the last bound (Prometheus answers +Inf's lower edge).
    """
    total = counts[-1] if counts else 0
    if total <= 0:
        raise ValueError("empty histogram")
    rank = q / 100 * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(le, counts, strict=True):
        if count >= rank:
            inside = count - lower_count
            if inside <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / inside
        lower_bound, lower_count = bound, count
    return le[-1]


def diff_histograms(
    before: Mapping[str, dict[str, Any]], after: Mapping[str, dict[str, Any]]
) -> tuple[list[float], list[float]]:
    """Pool the per-node histograms' growth between two readings (CL2 pools all proxies).

    A node whose histogram shrank (its agent restarted) counts from zero.
    """
    le: list[float] = []
    pooled: list[float] = []
    for node, rec in after.items():
        counts = [float(c) for c in rec.get("counts", [])]
        bounds = [float(b) for b in rec.get("le", [])]
        if not counts or len(counts) != len(bounds):
            continue
        old = before.get(node)
        base = [float(c) for c in old.get("counts", [])] if old else [0.0] * len(counts)
        if len(base) != len(counts) or any(b > a for a, b in zip(counts, base, strict=True)):
            base = [0.0] * len(counts)
        if not le:
            le, pooled = bounds, [0.0] * len(bounds)
        if bounds != le:
            continue
        pooled = [p + a - b for p, a, b in zip(pooled, counts, base, strict=True)]
    return le, pooled


@dataclass(frozen=True)
class Sli:
    """One SLI's p50/p90/p99 (seconds), how many samples, and its judgement."""

    family: str
    p: dict[int, float]
    samples: int
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def threshold(self) -> Threshold | None:
        return THRESHOLDS.get(self.family)

    @property
    def passed(self) -> bool | None:
        t = self.threshold
        if t is None:
            return None
        ok = self.p[t.quantile] <= t.bound
        if self.family == "dns_lookup":
            ok = ok and self.p[50] <= DNS_P50_S
        return ok


def perf_data(slis: Sequence[Sli]) -> dict[str, Any]:
    """clusterloader2's ``PerfData`` (version v1): one data item per SLI, milliseconds."""
    items = []
    for s in slis:
        items.append(
            {
                "data": {f"Perc{q}": round(v * 1000, 3) for q, v in sorted(s.p.items())},
                "unit": "ms",
                "labels": {"Metric": s.family, "Count": str(s.samples), **s.labels},
            }
        )
    return {"version": "v1", "dataItems": items}
