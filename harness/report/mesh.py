"""The report's mesh section: failover timelines, flip-back spread, stale backends, programming.

Self-contained: it reads only results (measurements named ``mesh_*`` and the
timelines the mesh suites record with ``labels["group"]``, one Timeline per
series) and gives the template one dict, or None when the results hold no
mesh scenario. Each group becomes one chart: a line per backend (thin) and per
cluster (thick), failed requests as red bars, events as dotted lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from harness.report.charts import EVENT_COLOR, Chart, _chart, _layout
from harness.report.perf import mode_title
from harness.results.model import Measurement, RunResults, Timeline

CLUSTER_COLORS = ("#2563eb", "#16a34a", "#9333ea", "#ea580c")
FAILED_COLOR = "#dc2626"


def grouped(tl: Timeline) -> bool:
    """Whether a timeline is one series of a mesh chart (the generic section skips it)."""
    return "group" in tl.labels


@dataclass
class MeshRow:
    what: str
    mode: str
    value: float
    unit: str
    threshold: float | None = None
    ok: bool | None = None
    labels: tuple[tuple[str, str], ...] = ()


def _rows(ms: list[Measurement]) -> list[MeshRow]:
    out = []
    for m in ms:
        extra = tuple(sorted((k, v) for k, v in m.labels.items() if k != "test"))
        out.append(MeshRow(m.name, m.mode, m.value, m.unit, m.threshold, m.passed, extra))
    return out


def _chart_for(name: str, mode: str, series: list[Timeline], chart_id: str) -> Chart:
    fig = go.Figure(layout=_layout("Seconds from the event", "Requests per second", 360))
    clusters = sorted(
        {tl.labels.get("name", "") for tl in series if tl.labels.get("series") == "cluster"}
    )
    color = {c: CLUSTER_COLORS[i % len(CLUSTER_COLORS)] for i, c in enumerate(clusters)}
    for tl in sorted(series, key=lambda t: (t.labels.get("series", ""), t.labels.get("name", ""))):
        xs, ys = [s.t_s for s in tl.samples], [s.value for s in tl.samples]
        kind = tl.labels.get("series")
        if kind == "failed":
            fig.add_bar(name="failed", x=xs, y=ys, marker_color=FAILED_COLOR, opacity=0.7)
        elif kind == "cluster":
            c = tl.labels.get("name", "")
            fig.add_scatter(
                name=tl.sample_name,
                x=xs,
                y=ys,
                mode="lines",
                line={"width": 4, "color": color.get(c)},
            )
        else:
            c = tl.sample_name.rsplit("(", 1)[-1].rstrip(")")
            fig.add_scatter(
                name=tl.sample_name,
                x=xs,
                y=ys,
                mode="lines+markers",
                line={"width": 1, "dash": "dot", "color": color.get(c)},
                marker={"size": 3},
            )
    for ev in series[0].events if series else ():
        fig.add_vline(x=ev.t_s, line={"color": EVENT_COLOR, "dash": "dot", "width": 1.5})
        fig.add_annotation(
            x=ev.t_s,
            y=1.0,
            yref="paper",
            text=ev.label,
            showarrow=False,
            xanchor="left",
            xshift=4,
            font={"size": 11, "color": EVENT_COLOR},
        )
    fig.update_yaxes(rangemode="tozero")
    return _chart(chart_id, f"{name} [{mode_title(mode)}]", fig)


def section(run: RunResults) -> dict[str, object] | None:
    """Everything the mesh section shows, or None without mesh results."""
    groups: dict[tuple[str, str], list[Timeline]] = {}
    for tl in run.timelines:
        if grouped(tl):
            groups.setdefault((tl.labels["group"], tl.mode), []).append(tl)
    measurements = [m for m in run.measurements if m.name.startswith("mesh_")]
    if not groups and not measurements:
        return None
    charts = [
        (series[0], _chart_for(name, mode, series, f"mesh-{i}"))
        for i, ((name, mode), series) in enumerate(sorted(groups.items()))
    ]

    def pick(*prefixes: str) -> list[MeshRow]:
        return _rows([m for m in measurements if m.name.startswith(prefixes)])

    return {
        "charts": charts,
        "failover": pick("mesh_graceful", "mesh_failover", "mesh_kill"),
        "flipback": pick("mesh_flipback"),
        "stale": pick("mesh_cut"),
        "outage": pick("mesh_etcd_outage"),
        "programming": pick("mesh_programming", "mesh_pod_first_answer", "mesh_cross_vs_in"),
        "other": pick("mesh_global"),
    }
