"""The throughput headline: each mode ÷ its hand-built path, with spreads and verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report import handbuilt, render
from harness.results.model import Environment, RunResults
from harness.results.store import ResultsWriter, RunMeta

ENV = Environment(kernel="6.1.0", cpu_count=2)
G = 1e9
TEST = "test_tcp_throughput_against_hand_built_path"


def _run(
    tmp_path: Path, modes: dict[str, dict[str, list[float]]], notes: dict[str, str]
) -> RunResults:
    w = ResultsWriter(tmp_path / "r.json", RunMeta("r", "t", tuple(modes), ENV))
    for mode, paths in modes.items():
        for path, values in paths.items():
            for i, v in enumerate(values):
                labels = {"test": TEST, "proto": "tcp", "streams": "1", "path": path,
                          "repeat": str(i + 1)}  # fmt: skip
                if mode in notes and path == "pod-pod":
                    labels["reference_note"] = notes[mode]
                elif mode not in notes:
                    labels["reference"] = "bridged+vxlan"
                w.record("throughput_bps", v * G, "bps", mode=mode, scenario=28, labels=labels)
                # the mode's path costs 0.125 cores per Gbit/s, the hand-built path 0.1
                per = 0.125 if path == "pod-pod" else 0.1
                w.record("cpu_sender_cores", per * v * 0.6, "cores", mode=mode, labels=labels)
                w.record("cpu_receiver_cores", per * v * 0.4, "cores", mode=mode, labels=labels)
    # a figure of another test must not leak into the headline
    w.record("throughput_bps", 1.0, "bps", mode="vxlan", labels={"path": "pod-pod"})
    return w.results()


def test_rows_divide_medians_count_rounds_below_and_judge_the_goal(tmp_path: Path) -> None:
    steady = [10.0, 10.1, 9.9, 10.0, 10.05]
    run = _run(
        tmp_path,
        {
            "vxlan": {
                "pod-pod": [9.7, 9.8, 9.6, 9.7, 9.75],
                "hand-built": steady,
                "node-node": [12.0, 12.1, 11.9, 12.0, 12.0],
            },
            "bgp": {
                "pod-pod": [8.0, 8.1, 7.9, 8.0, 8.0],
                "hand-built": steady,
                "node-node": steady,
            },
            "host-gw": {
                "pod-pod": [6.0, 9.0, 12.0, 7.0, 11.0],
                "hand-built": steady,
                "node-node": steady,
            },
            "udp": {"pod-pod": [1.0, 1.1, 0.9], "node-node": steady[:3]},
        },
        {"udp": "flannel's udp backend forwards every packet through the agent"},
    )
    rows = {r.mode: r for r in handbuilt.rows(run)}
    assert list(rows) == ["vxlan", "bgp", "host-gw", "udp"]  # the run's mode order
    vx = rows["vxlan"]
    assert vx.ratio_handbuilt == pytest.approx(9.7 / 10.0)
    assert vx.ratio_underlay == pytest.approx(9.7 / 12.0)
    assert vx.rounds_below == 5 and vx.pod is not None and vx.pod.rounds == 5
    assert vx.verdict == "meets goal" and vx.reference == "bridged+vxlan"
    assert vx.cpu_ratio == pytest.approx(0.1 / 0.125)  # the mode costs 25 % more per bit
    assert rows["bgp"].verdict == "below goal"
    assert rows["host-gw"].verdict == "too noisy"  # CV of the mode's rounds is ~30 %
    udp = rows["udp"]
    assert udp.verdict == "no reference" and udp.handbuilt is None
    assert udp.ratio_handbuilt is None and "udp backend" in udp.note and udp.cpu_ratio is None
    assert udp.ratio_underlay == pytest.approx(1.0 / 10.0)


def test_the_report_puts_the_headline_first(tmp_path: Path) -> None:
    run = _run(tmp_path, {"vxlan": {"pod-pod": [8.0, 8.0], "hand-built": [10.0, 10.0],
                                    "node-node": [12.0, 12.2]}}, {})  # fmt: skip
    src = tmp_path / "r.json"
    html = render.render([run], render.Sources((str(src),), None))
    assert html.index("Throughput against the hand-built path") < html.index(
        "Throughput against the underlay"
    )
    row = html[html.index('data-handbuilt-mode="vxlan"') :]
    row = row[: row.index("</tr>")]
    assert "bridged+vxlan" in row and "0.80" in row and "2/2" in row and "below-goal" in row
