"""etcd's own view of a load run: its /metrics read at the phase boundaries.

Where a mutating call's time goes is partly etcd's: every write is a raft entry
appended to the WAL and fsynced before etcd answers
(``etcd_disk_wal_fsync_duration_seconds``), and the backend commits batches of
them (``etcd_disk_backend_commit_duration_seconds``); etcd counts applies slower
than 100 ms (``etcd_server_slow_apply_total``) and its own CPU
(``process_cpu_seconds_total``). etcd's upstream tuning guide asks for a WAL fsync
p99 under 10 ms. ``podlab load`` reads these at the start, after the creates and
at the end, and reports their growth (quantiles as Prometheus'
``histogram_quantile``), beside its own breakdown of each call (report.py), so a
slow call is either etcd's disk, etcd's CPU, or the client's side, with a figure.
"""

from __future__ import annotations

import re
from typing import Any

import requests

HISTOGRAMS = ("etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds")
COUNTERS = (
    "etcd_server_slow_apply_total",
    "process_cpu_seconds_total",
    "grpc_server_handled_total",
)
_LINE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LE = re.compile(r'le="([^"]+)"')


def parse(text: str) -> dict[str, Any]:
    """The histograms (``{"le": [...], "counts": [...]}``, cumulative, +Inf dropped) and
    counters (summed over their labels) this module reports, from Prometheus' text."""
    hist: dict[str, dict[float, float]] = {h: {} for h in HISTOGRAMS}
    out: dict[str, Any] = {c: 0.0 for c in COUNTERS}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name, value = m["name"], float(m["value"])
        if name.endswith("_bucket") and name[: -len("_bucket")] in hist:
            le = _LE.search(m["labels"] or "")
            if le and le[1] != "+Inf":
                hist[name[: -len("_bucket")]][float(le[1])] = value
        elif name in out:
            out[name] += value
    for h, buckets in hist.items():
        bounds = sorted(buckets)
        out[h] = {"le": bounds, "counts": [buckets[b] for b in bounds]}
    return out


def scrape(session: requests.Session, etcd_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """One reading of etcd's /metrics; empty when etcd does not answer (not measured)."""
    try:
        r = session.get(f"{etcd_url.rstrip('/')}/metrics", timeout=timeout)
        r.raise_for_status()
    except requests.RequestException:
        return {}
    return parse(r.text)
