"""Results → one self-contained HTML file.

Everything the page needs is inside it: CSS, the figures' JSON, and plotly.js
from the installed plotly package, so the report opens offline and can be mailed
to a colleague. The page loads nothing from the network (a browser test checks).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from markupsafe import Markup

from harness.report import analysis, charts, compare, coverage, fmt, handbuilt, mesh, perf
from harness.results.model import RunResults
from harness.results.store import merge

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Sources:
    """Which files a report was built from, for its header."""

    results: tuple[str, ...]
    baseline: str | None = None


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        value=fmt.fmt_value,
        bps=fmt.fmt_bps,
        seconds=lambda v: "—" if v is None else fmt.fmt_seconds(v),
        pct=fmt.fmt_pct,
        labels=lambda items: ", ".join(f"{k}={v}" for k, v in items),
        mode_title=perf.mode_title,
        test_title=perf.describe_test,
        series=_series,
    )
    return env


def _series(s: handbuilt.Series | None) -> Markup:
    """A series of rounds as its median over ``± CV`` (two short lines), ``—`` for none."""
    if s is None:
        return Markup("—")
    return Markup('<span class="nowrap">{}</span><br><span class="muted small">± {}</span>').format(
        fmt.fmt_bps(s.median_bps), fmt.fmt_cv(s.cv)
    )


def _throughput_charts(rows: tuple[perf.ThroughputRow, ...]) -> list[charts.Chart]:
    tests = list(dict.fromkeys(r.test for r in rows))
    return [
        charts.throughput_chart([r for r in rows if r.test == t], f"tput-{i}")
        for i, t in enumerate(tests)
    ]


def _latency_charts(rows: tuple[perf.LatencyRow, ...]) -> list[charts.Chart]:
    families = list(dict.fromkeys(r.family for r in rows))
    return [
        charts.latency_chart([r for r in rows if r.family == f], f"lat-{i}")
        for i, f in enumerate(families)
    ]


def context(
    runs: Sequence[RunResults], sources: Sources, baseline: RunResults | None = None
) -> dict[str, object]:
    """Everything the template prints, computed from the results alone."""
    run = merge(runs)
    cover = coverage.coverage(run)
    tput = perf.throughput(run)
    lat = perf.latency(run)
    order = perf.ordering(run)
    return {
        "run": run,
        "sources": sources,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": analysis.summarize(run),
        "coverage": cover,
        "times": coverage.times(run, {r.number: r.title for r in cover.rows}),
        "handbuilt": handbuilt.rows(run),
        "handbuilt_goal": handbuilt.GOAL,
        "handbuilt_max_cv": handbuilt.MAX_CV,
        "throughput": perf.throughput_table(tput),
        "throughput_charts": _throughput_charts(tput),
        "ordering": order,
        "measured_order": perf.measured_order(order),
        "order_tolerance": perf.ORDER_TOLERANCE,
        "order_test": perf.describe_test(perf.ORDER_TEST),
        "latency": perf.latency_pairs(lat),
        "latency_charts": _latency_charts(lat),
        "slos": analysis.slo_table(run),
        "evidence": analysis.evidence_rows(run),
        "timelines": [
            (tl, charts.timeline_chart(tl, f"tl-{i}"))
            for i, tl in enumerate(run.timelines)
            if not mesh.grouped(tl)  # one series of a mesh chart: drawn in that section
        ],
        "mesh": mesh.section(run),
        "environment": analysis.environment_rows(run),
        "comparison": compare.compare(run, baseline) if baseline else None,
        "regression_tolerance": compare.REGRESSION_TOLERANCE,
        "plotly_js": charts.plotly_js(),
        "plotly_config": charts.config_json(),
    }


def render(runs: Sequence[RunResults], sources: Sources, baseline: RunResults | None = None) -> str:
    """The report's HTML for one or more results files and an optional baseline."""
    return _env().get_template("report.html.j2").render(**context(runs, sources, baseline))


def write(html: str, path: str | Path) -> Path:
    """Write the report atomically; returns the path written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
