"""Read a service log (the agent's, under supervisord) for errors and crashes since a moment.

The agent logs ``2026-11-21 21:01:13,123 ERROR podlab.agent: message``;
tracebacks and anything a crashing interpreter prints follow without a
timestamp and belong to the last stamped line before them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:[,.](\d+))? (\w+) ")
BAD_LEVELS = ("ERROR", "CRITICAL")


@dataclass(frozen=True)
class LogFindings:
    """Error lines and tracebacks found after ``since``."""

    errors: tuple[str, ...]
    tracebacks: int

    @property
    def clean(self) -> bool:
        return not self.errors and not self.tracebacks


def command(path: str) -> list[str]:
    """Print the log (and its rotated predecessor, if any) without failing when missing."""
    return ["sh", "-c", f"cat {path}.1 {path} 2>/dev/null || true"]


def _stamp(match: re.Match[str]) -> float:
    """Local-time stamp → epoch seconds (the lab's nodes share the host's clock and zone)."""
    base = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").timestamp()
    frac = match[2] or "0"
    return base + int(frac) / 10 ** len(frac)


def scan(text: str, since: float) -> LogFindings:
    """Errors (ERROR/CRITICAL lines) and tracebacks logged at or after ``since`` (epoch)."""
    errors: list[str] = []
    tracebacks = 0
    current = float("-inf")
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m:
            current = _stamp(m)
            if current >= since and m[3] in BAD_LEVELS:
                errors.append(line.strip()[:300])
        elif line.startswith("Traceback (most recent call last)") and current >= since:
            tracebacks += 1
    return LogFindings(tuple(errors), tracebacks)
