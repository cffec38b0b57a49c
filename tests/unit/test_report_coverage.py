"""The coverage table and the time tables: what ran, what did not and why, where time went."""

from __future__ import annotations

from pathlib import Path

from harness.report import coverage, render
from harness.results.model import (
    Check,
    Environment,
    Plan,
    PlannedMode,
    PlannedScenario,
    RunResults,
)
from harness.results.store import ResultsWriter, RunMeta

ENV = Environment(kernel="6.1.0", cpu_count=2)
PLAN = Plan(
    matrix="default",
    modes=(PlannedMode(mode="host-gw", families=("bridged", "direct", "clear")),
           PlannedMode(mode="bgp+wireguard", families=("routed", "direct", "encrypted"))),
    heavy_cover=("host-gw", "bgp+wireguard"),
    scenarios=(PlannedScenario(number=1, title="Pod→pod", tests=2),
               PlannedScenario(number=10, title="NodePort", cost="heavy", tests=1),
               PlannedScenario(number=14, title="Proxy scale", cost="once",
                               elsewhere="bench/bench_proxy.py"),
               PlannedScenario(number=20, title="Strict mode", tests=1),
               PlannedScenario(number=33, title="Quota", cost="once")),
)  # fmt: skip


def _run(tmp_path: Path) -> RunResults:
    w = ResultsWriter(tmp_path / "r.json", RunMeta("r", "t", ("host-gw", "bgp+wireguard"), ENV))
    w.set_plan(PLAN)
    w.timing("lab up", 3.0)
    w.timing("deploy", 20.0, "host-gw")
    w.timing("ready", 2.0, "host-gw")
    w.timing("mode", 40.0, "host-gw")
    w.timing("deploy", 25.0, "bgp+wireguard")
    for mode in ("host-gw", "bgp+wireguard"):
        w.check(1, "test_a", mode=mode, outcome="passed", duration_s=2.0)
        w.check(1, "test_b[cross-segment]", mode=mode, outcome="not-applicable",
                message="lab t: every node of the cluster is on one L2 segment")  # fmt: skip
    w.check(10, "test_node_port", mode="host-gw", outcome="failed", message="refused",
            duration_s=30.0)  # fmt: skip
    w.check(10, "test_node_port", mode="bgp+wireguard", outcome="not-selected",
            message="heavy check, run once per mode family: in host-gw; MATRIX=full …")  # fmt: skip
    w.check(20, "test_strict", mode="host-gw", outcome="not-applicable", message="host-gw: no …")
    w.check(20, "test_strict", mode="bgp+wireguard", outcome="skipped", message="no peer key")
    return w.finish()


def _cells(cov: coverage.Coverage) -> dict[tuple[int, str], coverage.CoverageCell]:
    return {(r.number, m): c for r in cov.rows for m, c in zip(cov.modes, r.cells, strict=True)}


def test_cells_tell_what_ran_from_what_did_not(tmp_path: Path) -> None:
    cov = coverage.coverage(_run(tmp_path))
    assert cov.modes == ("host-gw", "bgp+wireguard") and cov.matrix == "default"
    cells = _cells(cov)
    one = cells[(1, "host-gw")]
    assert (one.state, one.text, one.note) == ("passed", "✓ 1", "+1 n/a")
    assert cells[(10, "host-gw")].text == "✗ 1/1"
    assert cells[(10, "bgp+wireguard")].state == "not-selected"
    assert cells[(10, "bgp+wireguard")].text == "not sel."
    assert "in host-gw" in cells[(10, "bgp+wireguard")].details[0]
    assert cells[(20, "host-gw")].text == "n/a" and cells[(20, "bgp+wireguard")].text == "skipped"
    assert not any(c.state == "passed" for c in (cells[(20, m)] for m in cov.modes))


def test_rows_cover_the_whole_catalogue_and_the_families_met(tmp_path: Path) -> None:
    rows = {r.number: r for r in coverage.coverage(_run(tmp_path)).rows}
    assert list(rows) == [1, 10, 14, 20, 33]
    assert rows[1].families == "5/5"  # no entry of this plan is encapsulated
    assert rows[10].families == "3/5: not routed, encrypted"
    assert rows[14].note == "measured by bench/bench_proxy.py" and not rows[14].ran
    assert rows[33].note == "no shipped suite yet"
    assert rows[20].families == "0/3: not routed, direct, encrypted"


def test_a_file_without_a_plan_still_gets_a_table() -> None:
    run = RunResults(
        schema_version=1, run_id="old", started_at="2026-01-01T00:00:00Z", topology="t",
        environment=ENV, checks=(Check(scenario=3, name="x", mode="vxlan", outcome="skipped"),),
    )  # fmt: skip
    cov = coverage.coverage(run)
    assert [r.title for r in cov.rows] == ["Path MTU"] and cov.rows[0].cells[0].text == "skipped"


def test_time_goes_to_scenarios_modes_and_the_rest(tmp_path: Path) -> None:
    t = coverage.times(_run(tmp_path))
    assert [r.number for r in t.scenarios] == [10, 1, 20]
    ten = t.scenarios[0]
    assert (ten.seconds, ten.runs, ten.slowest) == (30.0, 1, "test_node_port [host-gw] 30.0 s")
    assert round(ten.share, 3) == round(30 / 34, 3) and t.tests_s == 34.0
    hostgw = t.modes[0]
    assert (hostgw.mode, hostgw.deploy_s, hostgw.ready_s, hostgw.tests_s) == (
        "host-gw", 20.0, 2.0, 40.0)  # fmt: skip
    assert hostgw.total_s == 62.0 and t.modes[1].tests_s is None
    assert t.other == (("lab up", 3.0),)


def test_the_report_shows_coverage_and_time(tmp_path: Path) -> None:
    html = render.render([_run(tmp_path)], render.Sources(("r.json",)))
    assert 'data-scenario="10" data-mode="bgp+wireguard" data-outcome="not-selected"' in html
    assert "no shipped suite yet" in html and 'data-time-scenario="10"' in html
    assert "not selected in this run" in html
