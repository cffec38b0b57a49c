"""Percentiles and summaries of samples, the way the report and the SLOs read them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (clusterloader2's definition): a value that was observed.

    Raises ValueError on an empty sample, because a percentile of nothing is a
    bug in the test that measured it, not a number to report.
    """
    if not samples:
        raise ValueError("percentile of an empty sample")
    if not 0 < pct <= 100:
        raise ValueError(f"percentile {pct} is not in (0, 100]")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def percentiles(samples: Sequence[float], pcts: Sequence[int] = (50, 90, 99)) -> dict[int, float]:
    """Several percentiles of one sample at once."""
    return {p: percentile(samples, p) for p in pcts}


def coefficient_of_variation(samples: Sequence[float]) -> float | None:
    """Sample standard deviation over the mean (0.05 = 5 %); None below two samples.

    The spread of repeated throughput rounds: a ratio of two medians is only as
    good as the CVs of the series it divides.
    """
    if len(samples) < 2:
        return None
    mean = statistics.fmean(samples)
    if mean == 0:
        return None
    return statistics.stdev(samples) / abs(mean)
