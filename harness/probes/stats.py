"""Percentiles and summaries of samples, the way the report and the SLOs read them."""

from __future__ import annotations

import math
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
