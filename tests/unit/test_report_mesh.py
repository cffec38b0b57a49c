"""The report's mesh section from synthetic results: grouped timelines become one chart,
mesh measurements land in their tables, and a run without mesh results has no section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.conformance import meshsvc
from harness.report import mesh, render
from harness.results import store
from harness.results.model import RunResults

GOLDEN = Path(__file__).parent.parent / "golden" / "results" / "synthetic-one-failed.json"


class _Rec:
    """Collects what ``record_timelines`` would hand the results writer."""

    def __init__(self) -> None:
        self.items: list[dict[str, object]] = []

    def timeline(self, name, events, samples=(), sample_name="", sample_unit="", labels=None):  # type: ignore[no-untyped-def]
        self.items.append(
            {
                "name": name,
                "mode": "vxlan",
                "scenario": 26,
                "events": [{"t_s": t, "label": lb} for t, lb in events],
                "samples": [{"t_s": t, "value": v} for t, v in samples],
                "sample_name": sample_name,
                "sample_unit": sample_unit,
                "labels": dict(labels or {}),
            }
        )


def _run_with_mesh() -> RunResults:
    base = store.load(GOLDEN)
    samples = [(100.0 + i * 0.02, "web-c1-0" if i < 100 else "web-c2-0") for i in range(200)]
    samples.insert(150, (102.9, "refused"))
    rec = _Rec()
    meshsvc.record_timelines(
        rec,
        "mesh: failover",
        samples,
        102.0,
        [(0.0, "deleted")],
        {"web-c1-0": "c1", "web-c2-0": "c2"},
    )
    data = json.loads(base.model_dump_json())
    data["timelines"] += rec.items
    m = {
        "name": "mesh_flipback_peak_share_ratio",
        "value": 1.2,
        "unit": "ratio",
        "mode": "vxlan",
        "threshold": 2.0,
        "comparison": "<=",
        "passed": True,
        "labels": {"flip_back": "spread"},
        "scenario": 26,
    }
    data["measurements"].append({**data["measurements"][0], **m})
    return RunResults.model_validate(data)


def test_grouped_timelines_become_one_chart_per_group() -> None:
    run = _run_with_mesh()
    got = mesh.section(run)
    assert got is not None
    ((_tl, chart),) = got["charts"]  # type: ignore[misc]
    fig = json.loads(chart.figure_json.replace("<\\/", "</"))
    names = {t.get("name") for t in fig["data"]}
    assert names == {"web-c1-0 (c1)", "web-c2-0 (c2)", "cluster c1", "cluster c2", "failed"}
    assert [r.what for r in got["flipback"]] == ["mesh_flipback_peak_share_ratio"]  # type: ignore[attr-defined]
    html = render.render([run], render.Sources(("x.json",), None))
    assert 'id="mesh"' in html and "Flip-back spread" in html
    assert html.count("<h3>mesh: failover") == 1  # not also drawn series by series in Timelines


def test_no_mesh_results_no_section() -> None:
    run = store.load(GOLDEN)
    assert mesh.section(run) is None
    assert 'id="mesh"' not in render.render([run], render.Sources(("x.json",), None))


def test_flipback_spread_sees_a_herd_and_its_absence() -> None:
    herd = [(10.0 + i * 0.02, "a") for i in range(50)] + [(11.0 + i * 0.02, "b") for i in range(50)]
    peak, _ = meshsvc.flipback_spread(herd, 10.0, preferred=3)
    assert peak == 3.0  # one backend took everything in a second: 3× its share
    even = [(10.0 + i * 0.02, "abc"[i % 3]) for i in range(150)]
    assert meshsvc.flipback_spread(even, 10.0, preferred=3)[0] == pytest.approx(1.0, abs=0.05)
