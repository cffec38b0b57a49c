"""Baseline comparison: deltas, and what counts as a regression."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report import compare
from harness.results.model import Environment, Measurement, RunResults
from harness.results.store import ResultsWriter, RunMeta

ENV = Environment(kernel="6.1.0", cpu_count=2)


def _run(tmp_path: Path, name: str, tput: float, p99: float, mtu: str, ready: float) -> RunResults:
    w = ResultsWriter(tmp_path / f"{name}.json", RunMeta(name, "t", ("vxlan",), ENV))
    w.record("throughput_bps", tput, "bps", mode="vxlan", labels={"proto": "tcp"})
    w.record("latency_p99_s", p99, "s", mode="vxlan")
    w.record("pod_ready_p99_s", ready, "s", mode="vxlan", scenario=5, threshold=5.0)
    w.record("mystery_count", 3, "count", mode="vxlan")
    w.check(3, "test_path_mtu", mode="vxlan", outcome=mtu)  # type: ignore[arg-type]
    w.check(1, "test_pod_to_pod", mode="vxlan", outcome="passed")
    return w.results()


def _by_name(c: compare.Comparison) -> dict[str, compare.MeasurementDelta]:
    return {d.name: d for d in c.measurements}


def test_throughput_down_more_than_ten_percent_is_a_regression(tmp_path: Path) -> None:
    old = _run(tmp_path, "old", 10e9, 1e-4, "passed", 1.0)
    new = _run(tmp_path, "new", 8.5e9, 1e-4, "passed", 1.0)
    d = _by_name(compare.compare(new, old))["throughput_bps"]
    assert d.status == "regression" and d.change == pytest.approx(-0.15)
    assert d.reason == "down 15.0 %, higher is better"


def test_small_moves_are_unchanged(tmp_path: Path) -> None:
    old = _run(tmp_path, "old", 10e9, 1e-4, "passed", 1.0)
    new = _run(tmp_path, "new", 9.2e9, 1.05e-4, "passed", 1.0)
    c = compare.compare(new, old)
    assert c.regressions == 0
    assert _by_name(c)["throughput_bps"].status == "unchanged"


def test_latency_up_is_a_regression_and_down_an_improvement(tmp_path: Path) -> None:
    old = _run(tmp_path, "old", 10e9, 1e-4, "passed", 1.0)
    worse = _by_name(compare.compare(_run(tmp_path, "a", 10e9, 1.2e-4, "passed", 1.0), old))
    better = _by_name(compare.compare(_run(tmp_path, "b", 10e9, 0.5e-4, "passed", 1.0), old))
    assert worse["latency_p99_s"].status == "regression"
    assert better["latency_p99_s"].status == "improvement"


def test_a_missed_threshold_is_a_regression_even_when_small(tmp_path: Path) -> None:
    old = _run(tmp_path, "old", 10e9, 1e-4, "passed", 4.9)
    new = _run(tmp_path, "new", 10e9, 1e-4, "passed", 5.1)
    d = _by_name(compare.compare(new, old))["pod_ready_p99_s"]
    assert d.status == "regression" and "threshold" in d.reason


def test_a_check_that_passed_and_now_fails_is_a_regression(tmp_path: Path) -> None:
    old = _run(tmp_path, "old", 10e9, 1e-4, "passed", 1.0)
    new = _run(tmp_path, "new", 10e9, 1e-4, "failed", 1.0)
    c = compare.compare(new, old)
    assert c.checks[0].status == "regression" and c.checks[0].name == "test_path_mtu"
    assert c.regressions == 1
    back = compare.compare(old, new)
    assert back.checks[0].status == "fixed" and back.improvements == 1


def test_unknown_direction_is_never_a_regression(tmp_path: Path) -> None:
    old = _run(tmp_path, "old", 10e9, 1e-4, "passed", 1.0)
    new = old.model_copy(
        update={
            "measurements": tuple(
                m.model_copy(update={"value": 300.0}) if m.name == "mystery_count" else m
                for m in old.measurements
            )
        }
    )
    d = _by_name(compare.compare(new, old))["mystery_count"]
    assert d.better is None and d.status == "unchanged" and d.change == pytest.approx(99.0)


def test_new_and_gone(tmp_path: Path) -> None:
    old = _run(tmp_path, "old", 10e9, 1e-4, "passed", 1.0)
    new = old.model_copy(update={"measurements": old.measurements[1:]})
    gone = _by_name(compare.compare(new, old))["throughput_bps"]
    assert gone.status == "gone" and gone.new is None
    came = _by_name(compare.compare(old, new))["throughput_bps"]
    assert came.status == "new"


@pytest.mark.parametrize(
    ("name", "unit", "expected"),
    [
        ("throughput_bps", "bps", "higher"),
        ("ratio_to_underlay", "ratio", "higher"),
        ("latency_p99_s", "s", "lower"),
        ("retransmits_count", "count", "lower"),
        ("udp_loss_percent", "percent", "lower"),
        ("pods_count", "count", None),
    ],
)
def test_better_direction(name: str, unit: str, expected: str | None) -> None:
    m = Measurement(name=name, value=1, unit=unit, mode="m", topology="t")
    assert compare.better_direction(m) == expected


def test_emulated_runs_are_never_compared_with_native_ones(tmp_path: Path) -> None:
    from harness.report import analysis
    from harness.results.model import NodeEnvironment

    native = _run(tmp_path, "native", 10e9, 1e-4, "passed", 1.0)
    vm = NodeEnvironment(node="c1-cp", backend="vm", kernel="6.1.0-50-amd64", accel="tcg")
    env = Environment(kernel="6.18", cpu_count=2, backend="vm", emulated=True, nodes=(vm,))
    w = ResultsWriter(tmp_path / "emu.json", RunMeta("emu", "t", ("ipip",), env))
    w.record("throughput_bps", 3e8, "bps", mode="ipip", labels={"proto": "tcp"})
    emulated = w.results()
    with pytest.raises(compare.IncomparableRuns, match=r"emulated .* never compared"):
        compare.compare(emulated, native)
    with pytest.raises(compare.IncomparableRuns):
        compare.compare(native, emulated)
    assert compare.compare(emulated, emulated).baseline_id == "emu"  # control: like with like
    rows = dict(analysis.environment_rows(emulated))
    assert rows["Lab backend"] == "vm" and "TCG" in rows["EMULATED"]
    assert rows["Node c1-cp"] == "vm, kernel 6.1.0-50-amd64, tcg"
