"""The HTML report and the `podlab report` verb, from stored synthetic results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.report import render
from harness.results import store

GOLDEN = Path(__file__).parent.parent / "golden" / "results"
FAILED = GOLDEN / "synthetic-one-failed.json"
BASELINE = GOLDEN / "synthetic-baseline.json"


@pytest.fixture(scope="module")
def html() -> str:
    runs = [store.load(FAILED)]
    return render.render(runs, render.Sources((FAILED.name,), BASELINE.name), store.load(BASELINE))


def _page(html: str) -> str:
    """The report without the embedded plotly.js (whose source mentions URLs)."""
    start = html.find('<script id="plotly-js">')
    assert start > 0, "plotly.js is not inlined"
    end = html.index("</script>", start)
    return html[:start] + html[end:]


def _cell(html: str, scenario: int, mode: str) -> str:
    match = re.search(
        rf'<td class="cell (\w+)" data-scenario="{scenario}" data-mode="{re.escape(mode)}"', html
    )
    assert match, f"no matrix cell for scenario {scenario} × {mode}"
    return match.group(1)


def test_matrix_shows_the_failed_scenario_as_failed(html: str) -> None:
    assert _cell(html, 3, "vxlan") == "failed"
    assert _cell(html, 3, "bgp") == "passed"
    assert _cell(html, 1, "vxlan+wireguard") == "passed"
    assert _cell(html, 21, "vxlan") == "skipped"
    assert "#3 test_path_mtu_equals_mode_mtu [vxlan]" in html
    assert "DF ping of 1450 bytes lost 5/5" in html  # the failure's message, in the cell title


def test_report_is_self_contained(html: str) -> None:
    page = _page(html)
    assert not re.search(r"<(script|img|iframe)[^>]+src=", page)
    assert "<link" not in page
    assert not re.search(r"https?://", page), re.findall(r"https?://\S+", page)[:3]
    assert "default-src 'none'" in page  # CSP: nothing may be fetched
    assert len(html) - len(page) > 1_000_000  # plotly.js itself is inlined


def test_figures_are_valid_json_with_axis_titles(html: str) -> None:
    figures = re.findall(
        r'<script type="application/json" class="figure"[^>]*>(.*?)</script>', html, re.S
    )
    assert len(figures) >= 6  # 3 throughput tests, 2 latency families, 2 timelines
    for text in figures:
        fig = json.loads(text.replace("<\\/", "</"))
        layout = fig["layout"]
        assert layout["xaxis"]["title"]["text"] and layout["yaxis"]["title"]["text"]
    titles = [json.loads(t)["layout"]["yaxis"]["title"]["text"] for t in figures]
    assert "Throughput (Gbit/s)" in titles and "Round-trip time (ms)" in titles


def test_ratios_and_ordering_in_the_page(html: str) -> None:
    assert '<td class="num ratio"><b>0.64×</b></td>' in html  # vxlan 6.375 / 10.0 Gbit/s
    row = re.search(r'<tr data-order-mode="ipip">.*?</tr>', html, re.S)
    assert row and "differs" in row.group(0) and "cited ipip ≈ bgp" in row.group(0)
    assert "underlay ≈ host-gw ≈ bgp ≈ cross-subnet &gt; calico-vxlan &gt; vxlan" in html


def test_baseline_regressions_are_marked(html: str) -> None:
    assert re.search(r'<tr class="regression"><td class="num">3</td><td>test_path_mtu', html)
    assert re.search(r'<tr class="regression"><td><code>throughput_bps</code></td><td>vxlan', html)
    assert "down 15.0 %, higher is better" in html


def test_synthetic_note_is_shown(html: str) -> None:
    assert "SYNTHETIC FIXTURE" in html


def test_user_text_is_escaped(tmp_path: Path) -> None:
    run = store.load(FAILED)
    check = run.checks[0].model_copy(
        update={"message": "<script>alert(1)</script>", "outcome": "failed"}
    )
    bad = run.model_copy(update={"checks": (check,)})
    out = render.render([bad], render.Sources(("x",)))
    assert "<script>alert(1)" not in out and "&lt;script&gt;alert(1)" in out


def test_missed_threshold_shows_in_the_slo_table(tmp_path: Path) -> None:
    run = store.load(FAILED)
    slow = [
        m.model_copy(update={"value": 7.0, "passed": False})
        if m.name == "pod_ready_p99_s" and m.mode == "udp"
        else m
        for m in run.measurements
    ]
    out = render.render(
        [run.model_copy(update={"measurements": tuple(slow)})], render.Sources(("x",))
    )
    want = '<td class="num slo-cell failed" data-mode="udp" title="MISSED"><span class="v">7.00 s'
    assert f"{want}</span> ✗</td>" in out


# --- the `podlab report` verb -------------------------------------------------------------


def test_cli_writes_the_report_and_exits_0_despite_failures(tmp_path: Path, capsys) -> None:
    out = tmp_path / "reports" / "run.html"
    assert main(["report", str(FAILED), "-o", str(out), "--baseline", str(BASELINE)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert "83 passed, 1 failed, 20 skipped" in capsys.readouterr().out


def test_fail_on_fail(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(FAILED), "-o", str(out), "--fail-on-fail"]) == 1
    assert out.exists()  # the report is written even when the exit status says fail
    clean = store.load(FAILED)
    clean = clean.model_copy(
        update={"checks": tuple(c for c in clean.checks if c.outcome != "failed")}
    )
    path = tmp_path / "clean.json"
    store.save(clean, path)
    assert main(["report", str(path), "-o", str(out), "--fail-on-fail"]) == 0


def test_several_results_files_merge(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(FAILED), str(BASELINE), "-o", str(out)]) == 0
    assert "synthetic-one-failed+synthetic-baseline" in out.read_text()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("{not json", "invalid JSON"),
        ('{"schema_version": 7}', "schema_version: is 7, this podlab reads 1"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, capsys, content, expected) -> None:
    src = tmp_path / "in.json"
    if content is not None:
        src.write_text(content)
    assert main(["report", str(src), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(src) in err and expected in err and "fix:" in err
    assert not (tmp_path / "r.html").exists()


def test_bad_baseline_is_reported_too(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "old.json"
    assert (
        main(["report", str(FAILED), "-o", str(tmp_path / "r.html"), "--baseline", str(missing)])
        == 2
    )
    assert str(missing) in capsys.readouterr().err


def test_an_empty_run_renders_every_section_as_empty(tmp_path: Path) -> None:
    from harness.results.model import Environment
    from harness.results.store import ResultsWriter, RunMeta

    w = ResultsWriter(
        tmp_path / "r.json", RunMeta("empty", "t", (), Environment(kernel="k", cpu_count=1))
    )
    w.timeline("agent restart", mode="bgp", events=[(1.0, "agent killed"), (1.5, "agent back")])
    out = render.render([w.results()], render.Sources(("r.json",)))
    assert "This run did not finish" in out
    for what in (
        "conformance checks",
        "throughput measurements",
        "latency percentiles",
        "encryption",
    ):
        assert f"No {what}" in out
    assert "agent killed" in out and out.count('class="figure"') == 1
