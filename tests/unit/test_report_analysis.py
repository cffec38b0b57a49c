"""Summary, SLO table and encryption evidence from results."""

from __future__ import annotations

from pathlib import Path

from harness.report import analysis
from harness.results.model import Environment, RunResults
from harness.results.store import ResultsWriter, RunMeta

ENV = Environment(kernel="6.1.0", cpu_count=2, fallbacks=("userspace-ipip",))


def _run(tmp_path: Path) -> RunResults:
    w = ResultsWriter(
        tmp_path / "r.json",
        RunMeta(run_id="r", topology="single", modes=("vxlan", "bgp"), environment=ENV),
    )
    w.check(1, "test_pod_to_pod_same_node", mode="vxlan", outcome="passed")
    w.check(1, "test_pod_to_pod_across_nodes", mode="vxlan", outcome="passed")
    w.check(1, "test_pod_to_pod_same_node", mode="bgp", outcome="passed")
    w.check(3, "test_path_mtu", mode="vxlan", outcome="failed", message="1451 bytes passed")
    w.check(3, "test_path_mtu", mode="bgp", outcome="passed")
    w.check(21, "test_bgp_sessions", mode="vxlan", outcome="skipped", message="no BGP")
    w.check(21, "test_bgp_sessions", mode="bgp", outcome="passed")
    w.record("pod_ready_p99_s", 1.2, "s", mode="vxlan", scenario=5, threshold=5.0)
    w.record("pod_ready_p99_s", 6.5, "s", mode="bgp", scenario=5, threshold=5.0)
    w.record("throughput_bps", 1e9, "bps", mode="bgp", scenario=28)
    w.record(
        "canary_seen_count", 0, "count", mode="vxlan", scenario=19, threshold=0,
        labels={"capture": "c1-w1:eth1", "encryption": "wireguard"},
    )  # fmt: skip
    return w.finish()


def test_summary_counts(tmp_path: Path) -> None:
    s = analysis.summarize(_run(tmp_path))
    assert (s.checks, s.passed, s.failed, s.skipped) == (7, 5, 1, 1)
    assert (s.slos, s.slos_met) == (3, 2)
    assert s.modes == ("vxlan", "bgp")
    assert not s.ok
    assert "#3 test_path_mtu [vxlan]" in s.failures
    assert any(f.startswith("pod_ready_p99_s [bgp] = 6.50 s") for f in s.failures)


def test_slo_table_puts_misses_first(tmp_path: Path) -> None:
    t = analysis.slo_table(_run(tmp_path))
    assert t.modes == ("vxlan", "bgp")
    first = t.rows[0]
    assert first.name == "pod_ready_p99_s" and first.threshold == "≤ 5.00 s" and first.missed == 1
    vxlan, bgp = first.cells
    assert vxlan is not None and vxlan.passed and vxlan.value == "1.20 s"
    assert bgp is not None and bgp.passed is False


def test_encryption_evidence(tmp_path: Path) -> None:
    rows = analysis.evidence_rows(_run(tmp_path))
    assert len(rows) == 1
    row = rows[0]
    assert (row.capture, row.encryption, row.verdict) == ("c1-w1:eth1", "wireguard", "passed")
    assert row.seen == "0 (expected ≤ 0)"


def test_any_failed(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert analysis.any_failed(run)
    clean = run.model_copy(
        update={
            "checks": tuple(c for c in run.checks if c.outcome != "failed"),
            "measurements": tuple(m for m in run.measurements if m.passed is not False),
        }
    )
    assert not analysis.any_failed(clean)


def test_environment_rows_name_the_fallbacks(tmp_path: Path) -> None:
    rows = dict(analysis.environment_rows(_run(tmp_path)))
    assert rows["Fallbacks in use"] == "userspace-ipip"
    assert rows["Kernel"] == "6.1.0"
