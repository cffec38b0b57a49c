"""podlab load's SLI arithmetic and preflight (harness/load/sli.py, preflight.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.errors import problem_line
from harness.load import preflight, sli


def test_percentiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert sli.quantiles(values) == {50: 50.0, 90: 90.0, 99: 99.0}
    assert sli.percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        sli.percentile([], 50)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    le, counts = [0.25, 0.5, 1.0], [10.0, 20.0, 20.0]
    assert sli.histogram_quantile(50, le, counts) == 0.25
    assert sli.histogram_quantile(75, le, counts) == pytest.approx(0.375)
    assert sli.histogram_quantile(25, le, counts) == pytest.approx(0.125)
    with pytest.raises(ValueError):
        sli.histogram_quantile(50, le, [0.0, 0.0, 0.0])


def test_histograms_are_pooled_as_growth_between_readings() -> None:
    before = {"a": {"le": [1, 2], "counts": [1, 2]}, "b": {"le": [1, 2], "counts": [5, 5]}}
    after = {
        "a": {"le": [1, 2], "counts": [2, 4]},  # +1, +2
        "b": {"le": [1, 2], "counts": [1, 1]},  # restarted: counts from zero
        "c": {"le": [1, 2], "counts": [0, 3]},  # new
    }
    le, pooled = sli.diff_histograms(before, after)
    assert le == [1.0, 2.0] and pooled == [2.0, 6.0]


def test_slis_are_judged_against_cl2_thresholds() -> None:
    fast = sli.Sli("pod_startup", {50: 0.1, 90: 0.2, 99: 0.3}, 100)
    slow = sli.Sli("pod_startup", {50: 1.0, 90: 4.0, 99: 5.5}, 100)
    assert fast.passed is True and slow.passed is False
    dns = sli.Sli("dns_lookup", {50: 0.03, 90: 0.04, 99: 0.05}, 10)
    assert dns.passed is False  # p99 within 0.1 s, but p50 over 0.02 s
    assert sli.Sli("rss", {50: 1.0, 90: 1.0, 99: 1.0}, 1).passed is None
    data = sli.perf_data([fast])
    assert data["version"] == "v1"
    assert data["dataItems"][0]["data"] == {"Perc50": 100.0, "Perc90": 200.0, "Perc99": 300.0}
    assert data["dataItems"][0]["labels"]["Metric"] == "pod_startup"


HOST = preflight.Have(
    mem_available_bytes=20 * 1024**3, pid_max=32768, pids_running=200, conntrack_max=262144,
    conntrack_count=10, file_max=1 << 20, files_open=2000, nofile_soft=20000,
    inotify_instances=128, inotify_watches=8192,
)  # fmt: skip


def test_preflight_passes_a_size_the_machine_holds() -> None:
    need = preflight.Need(hollow_nodes=1000, hollow_pods=30000, real_pods=90)
    assert preflight.problems(need, HOST, "podlab load") == []


@pytest.mark.parametrize(
    ("have", "limit"),
    [
        (replace(HOST, mem_available_bytes=100 * 1024**2), "memory"),
        (replace(HOST, pids_running=32700), "kernel.pid_max"),
        (replace(HOST, conntrack_max=100), "net.netfilter.nf_conntrack_max"),
        (replace(HOST, file_max=2100), "fs.file-max"),
        (replace(HOST, nofile_soft=256), "ulimit -n"),
        (replace(HOST, inotify_instances=64), "fs.inotify.max_user_instances"),
        (replace(HOST, inotify_watches=100), "fs.inotify.max_user_watches"),
    ],
)
def test_preflight_names_the_limit_and_the_fix(have: preflight.Have, limit: str) -> None:
    need = preflight.Need(hollow_nodes=1000, hollow_pods=30000, real_pods=90)
    found = preflight.problems(need, have, "podlab load --nodes 1000")
    assert [p.where for p in found] == [limit]
    line = problem_line(found[0])
    assert line.startswith(f"podlab load --nodes 1000: {limit}: ") and "(fix: " in line


def test_have_reads_this_machine() -> None:
    have = preflight.Have.read()
    assert have.mem_available_bytes > 0 and have.pid_max > have.pids_running > 0
