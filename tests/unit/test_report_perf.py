"""Throughput ratios against the underlay, the cited mode ordering, latency percentiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report import perf
from harness.results.model import Environment, RunResults
from harness.results.store import ResultsWriter, RunMeta

ENV = Environment(kernel="6.1.0", cpu_count=2)
G = 1e9


def _run(tmp_path: Path, pods: dict[str, list[float]], under: dict[str, list[float]]) -> RunResults:
    modes = tuple(dict.fromkeys([*pods, *under]))
    w = ResultsWriter(
        tmp_path / "r.json", RunMeta(run_id="r", topology="t", modes=modes, environment=ENV)
    )
    for mode, values in pods.items():
        for i, v in enumerate(values):
            w.record("throughput_bps", v * G, "bps", mode=mode, labels={"repeat": str(i)})
    for mode, values in under.items():
        for v in values:
            w.record("throughput_bps", v * G, "bps", mode=mode, labels={"path": "node-node"})
    return w.results()


def test_ratio_is_median_pod_over_same_mode_underlay(tmp_path: Path) -> None:
    run = _run(tmp_path, {"vxlan": [6.0, 7.0, 100.0]}, {"vxlan": [10.0, 9.0, 11.0]})
    (row,) = perf.throughput(run)
    assert row.pod_bps == pytest.approx(7.0 * G)  # the median resists the outlier
    assert row.underlay_bps == pytest.approx(10.0 * G)
    assert row.ratio == pytest.approx(0.7)
    assert not row.underlay_shared and row.samples == 3


def test_mode_without_own_underlay_uses_the_runs(tmp_path: Path) -> None:
    run = _run(tmp_path, {"vxlan": [5.0], "udp": [1.0]}, {"vxlan": [10.0]})
    rows = {r.mode: r for r in perf.throughput(run)}
    assert rows["udp"].underlay_shared and rows["udp"].ratio == pytest.approx(0.1)
    assert not rows["vxlan"].underlay_shared


def test_tests_are_kept_apart(tmp_path: Path) -> None:
    w = ResultsWriter(tmp_path / "r.json", RunMeta("r", "t", ("bgp",), ENV))
    for proto, streams, pod, under in (
        ("tcp", "1", 8, 10),
        ("tcp", "4", 12, 16),
        ("udp", "1", 1, 2),
    ):
        lab = {"proto": proto, "streams": streams}
        w.record("throughput_bps", pod * G, "bps", mode="bgp", labels=lab)
        w.record(
            "throughput_bps", under * G, "bps", mode="bgp", labels={**lab, "path": "node-node"}
        )
    ratios = {r.test: r.ratio for r in perf.throughput(w.results())}
    assert ratios == {
        ("tcp", "1"): pytest.approx(0.8),
        ("tcp", "4"): pytest.approx(0.75),
        ("udp", "1"): pytest.approx(0.5),
    }
    table = perf.throughput_table(perf.throughput(w.results()))
    assert table.tests == (("tcp", "1"), ("tcp", "4"), ("udp", "1"))


def _order(tmp_path: Path, pods: dict[str, float]) -> dict[str, perf.OrderRow]:
    run = _run(tmp_path, {m: [v] for m, v in pods.items()}, {"bgp": [10.0]})
    return {r.mode: r for r in perf.ordering(run)}


def test_ordering_that_matches_the_citation(tmp_path: Path) -> None:
    rows = _order(tmp_path, {"bgp": 9.0, "ipip": 8.5, "vxlan": 6.0, "udp": 1.0, "host-gw": 9.5})
    for mode in ("underlay", "bgp", "ipip", "vxlan", "udp"):
        assert rows[mode].verdict == "matches", rows[mode].detail
    assert rows["underlay"].cited_rank == 1 and rows["ipip"].cited_rank == 2
    assert rows["host-gw"].verdict == "outside the cited order"
    assert rows["vxlan"].ratio == pytest.approx(0.6)
    assert rows["underlay"].measured_rank == 1 and rows["udp"].measured_rank == 6


def test_ordering_that_differs_names_the_broken_relation(tmp_path: Path) -> None:
    # a userspace IPIP fallback: far slower than BGP and even than VXLAN
    rows = _order(tmp_path, {"bgp": 9.0, "ipip": 2.0, "vxlan": 6.0, "udp": 1.0})
    assert rows["ipip"].verdict == "differs"
    assert "cited ipip ≈ bgp" in rows["ipip"].detail
    assert "cited ipip > vxlan" in rows["ipip"].detail
    assert rows["vxlan"].verdict == "differs" and rows["udp"].verdict == "matches"
    assert rows["underlay"].verdict == "matches"


def test_ordering_with_a_mode_not_measured(tmp_path: Path) -> None:
    rows = _order(tmp_path, {"bgp": 9.0, "vxlan": 6.0})
    assert rows["ipip"].verdict == "not measured" and rows["udp"].verdict == "not measured"
    assert rows["vxlan"].verdict == "matches"
    assert "calico-vxlan" not in rows


def test_encrypted_modes_stay_out_of_the_ordering(tmp_path: Path) -> None:
    rows = _order(tmp_path, {"vxlan+wireguard": 1.0, "vxlan": 6.0})
    assert "vxlan+wireguard" not in rows and rows["vxlan"].bps == pytest.approx(6.0 * G)


def test_measured_order_line(tmp_path: Path) -> None:
    rows = _order(tmp_path, {"bgp": 9.5, "ipip": 9.0, "vxlan": 6.0})
    assert perf.measured_order(tuple(rows.values())) == "underlay ≈ bgp ≈ ipip > vxlan"


def test_latency_percentiles_grouped(tmp_path: Path) -> None:
    w = ResultsWriter(tmp_path / "r.json", RunMeta("r", "t", ("vxlan",), ENV))
    for rep, (p50, p99) in enumerate(((1e-4, 3e-4), (2e-4, 4e-4), (3e-4, 9e-4))):
        lab = {"path": "pod-pod", "repeat": str(rep)}
        w.record("latency_p50_s", p50, "s", mode="vxlan", labels=lab)
        w.record("latency_p99_s", p99, "s", mode="vxlan", labels=lab)
    w.record("latency_p50_s", 5e-5, "s", mode="vxlan", labels={"path": "node-node"})
    w.record("pod_ready_p99_s", 1.5, "s", mode="vxlan")
    rows = perf.latency(w.results())
    by = {(r.family, r.path): r for r in rows}
    pod = by[("latency", "pod-pod")]
    assert pod.p50_s == pytest.approx(2e-4) and pod.p99_s == pytest.approx(4e-4)
    assert pod.p90_s is None
    assert by[("latency", "node-node")].p50_s == pytest.approx(5e-5)
    assert by[("pod_ready", "")].p99_s == pytest.approx(1.5)
    pairs = perf.latency_pairs(rows)
    assert [(r.family, u is not None) for r, u in pairs] == [
        ("latency", True),
        ("pod_ready", False),
    ]


def test_mode_titles() -> None:
    assert perf.mode_title("vxlan") == "Flannel VXLAN"
    assert perf.mode_title("bgp+wireguard") == "Calico BGP + wireguard"
    assert perf.mode_title("calico-vxlan", br=True) == "Calico<br>VXLAN"
