"""Plotly figures for the report, as JSON the page draws with embedded plotly.js.

Every chart has axis titles with units. Figures carry no plotly template (the
default one adds ~10 kB of JSON per chart and a look we do not want); the page's
one script draws every ``<script type="application/json" class="figure">``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import plotly.graph_objects as go
import plotly.offline

from harness.report.perf import (
    UNDERLAY,
    LatencyRow,
    ThroughputRow,
    describe_test,
    mode_title,
    underlay_latency,
)
from harness.results.model import Timeline

UNDERLAY_COLOR = "#9aa5b1"
POD_COLOR = "#2563eb"
PCT_COLORS = {"p50": "#93c5fd", "p90": "#3b82f6", "p99": "#1e3a8a"}
EVENT_COLOR = "#dc2626"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
}


@dataclass(frozen=True)
class Chart:
    """A figure ready for the template: an element id, a title and its JSON."""

    id: str
    title: str
    figure_json: str


def plotly_js() -> str:
    """The installed plotly package's plotly.min.js, for inlining (no CDN)."""
    return plotly.offline.get_plotlyjs()


def config_json() -> str:
    return json.dumps(CONFIG)


def _layout(xtitle: str, ytitle: str, height: int = 380) -> dict[str, object]:
    axis = {"gridcolor": "#e5e7eb", "linecolor": "#9ca3af", "zeroline": False, "automargin": True}
    return {
        "template": "none",
        "height": height,
        "margin": {"l": 70, "r": 20, "t": 40, "b": 60},
        "font": {"family": FONT, "size": 13, "color": "#1f2937"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "barmode": "group",
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
        "xaxis": {**axis, "title": {"text": xtitle}},
        "yaxis": {**axis, "title": {"text": ytitle}},
    }


def _chart(chart_id: str, title: str, fig: go.Figure) -> Chart:
    # "</" must not appear inside a <script> element.
    return Chart(chart_id, title, fig.to_json().replace("</", "<\\/"))


def throughput_chart(rows: list[ThroughputRow], chart_id: str) -> Chart:
    """Grouped bars per mode: the underlay beside pod→pod, the ratio on the pod bar."""
    test = rows[0].test
    modes = [mode_title(r.mode, br=True) for r in rows]
    gbps = [None if r.pod_bps is None else r.pod_bps / 1e9 for r in rows]
    under = [None if r.underlay_bps is None else r.underlay_bps / 1e9 for r in rows]
    ratios = ["" if r.ratio is None else f"{r.ratio:.2f}×" for r in rows]
    fig = go.Figure(layout=_layout("Datapath mode", "Throughput (Gbit/s)"))
    fig.add_bar(
        name="Underlay node→node (baseline)", x=modes, y=under, marker_color=UNDERLAY_COLOR,
        hovertemplate="%{x}<br>underlay %{y:.2f} Gbit/s<extra></extra>",
    )  # fmt: skip
    fig.add_bar(
        name="Pod→pod across nodes (label: ratio to underlay)", x=modes, y=gbps,
        marker_color=POD_COLOR, text=ratios, textposition="outside", cliponaxis=False,
        hovertemplate="%{x}<br>pod→pod %{y:.2f} Gbit/s (%{text} underlay)<extra></extra>",
    )  # fmt: skip
    return _chart(chart_id, f"Throughput, {describe_test(test)}", fig)


def _latency_axis(family: str, values: list[float]) -> tuple[str, float]:
    """Y-axis title and scale: milliseconds unless the figures reach seconds."""
    what = "Round-trip time" if family == "latency" else family.replace("_", " ").capitalize()
    what += "" if what.endswith("time") else " time"
    return (f"{what} (s)", 1.0) if max(values, default=0) >= 1 else (f"{what} (ms)", 1e3)


def latency_chart(rows: list[LatencyRow], chart_id: str) -> Chart:
    """Grouped p50/p90/p99 bars per mode, the underlay (node→node) first as the baseline."""
    under = underlay_latency(rows)
    shown = ([under] if under else []) + [r for r in rows if r.path != "node-node"]
    xs = [
        "Underlay<br>node→node"
        if r.mode == UNDERLAY
        else mode_title(r.mode, br=True) + ("" if r.path in ("pod-pod", "") else f"<br>({r.path})")
        for r in shown
    ]
    values = [v for r in shown for v in (r.p50_s, r.p90_s, r.p99_s) if v is not None]
    ytitle, scale = _latency_axis(rows[0].family, values)
    fig = go.Figure(layout=_layout("Datapath mode", ytitle))
    unit = ytitle[ytitle.rindex("(") + 1 : -1]
    for pct in ("p50", "p90", "p99"):
        ys = [getattr(r, f"{pct}_s") for r in shown]
        fig.add_bar(
            name=pct, x=xs, y=[None if y is None else y * scale for y in ys],
            marker_color=PCT_COLORS[pct],
            hovertemplate=f"%{{x}}<br>{pct} %{{y:.3f}} {unit}<extra></extra>",
        )  # fmt: skip
    family = rows[0].family.replace("_", " ")
    return _chart(chart_id, f"{family.capitalize()} percentiles", fig)


def timeline_chart(tl: Timeline, chart_id: str) -> Chart:
    """The sampled series over time with each event as a labelled vertical line."""
    unit = f" ({tl.sample_unit})" if tl.sample_unit else ""
    fig = go.Figure(layout=_layout("Time since start (s)", f"{tl.sample_name or 'value'}{unit}"))
    if tl.samples:
        fig.add_scatter(
            x=[s.t_s for s in tl.samples], y=[s.value for s in tl.samples], mode="lines+markers",
            name=tl.sample_name or "samples", line={"color": POD_COLOR, "width": 2},
            marker={"size": 4},
        )  # fmt: skip
        fig.update_yaxes(rangemode="tozero")
    for i, ev in enumerate(tl.events):
        fig.add_vline(x=ev.t_s, line={"color": EVENT_COLOR, "dash": "dot", "width": 1.5})
        fig.add_annotation(
            x=ev.t_s, y=1.0 - 0.1 * (i % 4), yref="paper", text=f"{ev.label} ({ev.t_s:g} s)",
            showarrow=False, xanchor="left", xshift=4, bgcolor="rgba(255,255,255,0.85)",
            font={"size": 11, "color": EVENT_COLOR},
        )  # fmt: skip
    if not tl.samples:
        xs = [e.t_s for e in tl.events] or [0.0]
        fig.update_xaxes(range=[min(xs) - 1, max(xs) + 1])
        fig.update_yaxes(visible=False)
    fig.update_layout(showlegend=False, height=300)
    return _chart(chart_id, f"{tl.name} [{mode_title(tl.mode)}]", fig)
