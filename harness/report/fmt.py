"""Human formatting of values with their units, and a few shared helpers.

Results files keep SI base units (bit/s, seconds); people read Gbit/s and
milliseconds. Formatting lives here so tables, charts and deltas agree.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

from harness.results.model import Comparison, Measurement

# Labels that distinguish repeats of the same measurement, not different things.
REPEAT_LABELS = frozenset({"repeat", "iteration", "synthetic"})


def fmt_bps(value: float) -> str:
    """Bits per second as Gbit/s, Mbit/s or kbit/s."""
    for scale, unit in ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} bit/s"


def fmt_seconds(value: float) -> str:
    """Seconds as s, ms or µs, whichever reads best."""
    if abs(value) >= 1:
        return f"{value:.2f} s"
    if abs(value) >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} µs"


def fmt_value(value: float | None, unit: str) -> str:
    """A value with its unit, scaled for reading ("9.41 Gbit/s", "1.20 ms", "0.82×")."""
    if value is None:
        return "—"
    if unit == "bps":
        return fmt_bps(value)
    if unit == "s":
        return fmt_seconds(value)
    if unit == "ratio":
        return f"{value:.2f}×"
    if unit == "percent":
        return f"{value:.2f} %"
    if unit == "cores":
        return f"{value:.2f} cores"
    if unit == "bytes":
        return f"{value:.0f} B"
    if unit in ("pps", "rps"):
        return f"{value:,.0f} {'packets/s' if unit == 'pps' else 'req/s'}"
    if unit == "count":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
    return f"{value:g} {unit}"


def fmt_threshold(threshold: float | None, comparison: Comparison, unit: str) -> str:
    """A threshold as "≤ 5.00 s" or "≥ 0.50×"."""
    if threshold is None:
        return "—"
    return f"{'≤' if comparison == '<=' else '≥'} {fmt_value(threshold, unit)}"


def fmt_pct(fraction: float | None) -> str:
    """A relative change as a signed percentage ("+12.3 %")."""
    return "—" if fraction is None else f"{fraction * 100:+.1f} %"


def fmt_labels(labels: Mapping[str, str]) -> str:
    """Labels as "k=v, k=v", without the ones that only number repeats."""
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in REPEAT_LABELS)


def label_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """A hashable identity of labels that ignores repeat counters."""
    return tuple(sorted((k, v) for k, v in labels.items() if k not in REPEAT_LABELS))


def median(values: Iterable[float]) -> float | None:
    """The median, or None for no values (repeats are summarised by their median)."""
    vals = list(values)
    return statistics.median(vals) if vals else None


def median_of(measurements: Iterable[Measurement]) -> float | None:
    """Median value of some measurements."""
    return median(m.value for m in measurements)


def fmt_cv(cv: float | None) -> str:
    """A coefficient of variation as ``3.1 %``, or ``—`` below two samples."""
    return "—" if cv is None else f"{cv * 100:.1f} %"
