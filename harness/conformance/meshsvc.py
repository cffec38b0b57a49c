"""Helpers of the mesh-services suites (scenarios 25, 26) and of bench/bench_mesh.py.

The pure parts judge a request stream (``netcheck stream``: (epoch, who
answered or how it failed)): per-second counts per backend and per cluster,
the flip-back spread, and the results timelines the report's mesh section
draws (one Timeline per series, grouped by ``labels["group"]``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from harness.agent.mesh import globalsvc
from harness.conformance.labctl import Lab
from harness.plan.model import LabPlan

Samples = Sequence[tuple[float, str]]


def mesh_clusters(lab: Lab) -> list[str]:
    """The clusters of the lab's first mesh with two or more clusters (``podlab.mesh``)."""
    return plan_mesh_clusters(lab.plan)


def plan_mesh_clusters(plan: LabPlan) -> list[str]:
    """``mesh_clusters`` of a lab plan (the plugin's quiet lock names them before a lab
    is attached)."""
    by_mesh: dict[str, list[str]] = {}
    for name, cluster in plan.clusters.items():
        mesh = getattr(cluster, "mesh", None)
        if mesh:
            by_mesh.setdefault(mesh, []).append(name)
    return next((c for c in by_mesh.values() if len(c) >= 2), [])


def global_annotations(affinity: str = "none", **extra: str) -> dict[str, str]:
    ann = {globalsvc.ANN_GLOBAL: "true", globalsvc.ANN_AFFINITY: affinity}
    return {**ann, **extra}


def with_annotations(manifest: dict[str, Any], annotations: Mapping[str, str]) -> dict[str, Any]:
    meta = {**manifest["metadata"], "annotations": dict(annotations)}
    return {**manifest, "metadata": meta}


def per_second(samples: Samples, t0: float) -> dict[int, Counter[str]]:
    """Requests per whole second since ``t0`` (negative before it), by outcome."""
    out: dict[int, Counter[str]] = {}
    for t, who in samples:
        out.setdefault(math.floor(t - t0), Counter())[who] += 1
    return dict(sorted(out.items()))


def flipback_spread(
    samples: Samples,
    t_ret: float,
    preferred: int,
    backends: set[str] | None = None,
    window_s: float = 10.0,
    min_per_s: int = 10,
) -> tuple[float, float]:
    """(peak, window) of one backend's share ÷ the share each of the ``preferred``
    backends carries at full strength (1/preferred), over ``window_s`` after ``t_ret``.

    Peak: the largest such ratio in any second with at least ``min_per_s`` answered
    requests (fewer say nothing about shares). Window: the same over the whole window.
    Cilium's immediate flip-back gives the first backend back a peak of ``preferred``.
    Only answers of ``backends`` count (all answers when None); failures never do.
    """
    answered = [
        (t, w)
        for t, w in samples
        if t_ret <= t < t_ret + window_s and w and (backends is None or w in backends)
    ]
    peak = 0.0
    for counts in per_second(answered, t_ret).values():
        total = sum(counts.values())
        if total >= min_per_s:
            peak = max(peak, max(counts.values()) * preferred / total)
    tally = Counter(w for _, w in answered)
    whole = max(tally.values()) * preferred / len(answered) if answered else float("nan")
    return peak, whole


class Recorder(Protocol):
    def timeline(
        self,
        name: str,
        events: Sequence[tuple[float, str]],
        samples: Sequence[tuple[float, float]] = (),
        sample_name: str = "",
        sample_unit: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> None: ...


def record_timelines(
    record: Recorder,
    group: str,
    samples: Samples,
    t0: float,
    events: Sequence[tuple[float, str]],
    clusters: Mapping[str, str],
) -> None:
    """Per second from ``t0``: requests per backend, per cluster, and failed ones —
    one Timeline each, all with ``labels['group'] = group`` (one chart in the report)."""
    seconds = per_second(samples, t0)
    series: dict[tuple[str, str], dict[int, int]] = {}
    for sec, counts in seconds.items():
        for who, n in counts.items():
            cluster = clusters.get(who)
            keys = [("backend", who), ("cluster", cluster)] if cluster else [("failed", "failed")]
            for key in keys:
                series.setdefault(key, {})[sec] = series.get(key, {}).get(sec, 0) + n
    for (kind, name), per_s in sorted(series.items()):
        points = [(float(s), float(per_s.get(s, 0))) for s in seconds]
        label = {"backend": f"{name} ({clusters.get(name, '')})", "cluster": f"cluster {name}"}
        record.timeline(
            group, events, points, sample_name=label.get(kind, "failed requests"),
            sample_unit="requests/s", labels={"group": group, "series": kind, "name": name},
        )  # fmt: skip


def timeline_text(samples: Samples, t0: float, clusters: Mapping[str, str]) -> str:
    """The same per-second table as text (benchmarks print it; failures marked !)."""
    lines = []
    for sec, counts in per_second(samples, t0).items():
        by_c: Counter[str] = Counter()
        failed = 0
        for who, n in counts.items():
            if who in clusters:
                by_c[clusters[who]] += n
            else:
                failed += n
        backs = " ".join(f"{w}={n}" for w, n in sorted(counts.items()) if w in clusters)
        per_c = " ".join(f"{c} {n:3d}" for c, n in sorted(by_c.items()))
        lines.append(
            f"  {sec:+4d}  {backs:58s} | {per_c}" + (f" !{failed} failed" if failed else "")
        )
    return "\n".join(lines)
