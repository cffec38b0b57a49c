"""bench/bench_lockstep_order.py: a lockstep phase replayed under the quiet lock's rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.bench_lockstep_order import (
    OLD_LOCKSTEP_ORDER,
    Check,
    RunSpec,
    by_rank,
    load_phase,
    main,
    phase_timing,
    reorder,
    replay,
    suite_marks,
)
from harness.conformance import quiet

ORDINARY = quiet.Claim(shared=("c1",))


def _ordinary(cluster: str, name: str, seconds: float) -> Check:
    return Check(name, "test_x", seconds, quiet.Claim(shared=(cluster,)))


def _quiet(cluster: str, name: str, seconds: float) -> Check:
    return Check(name, "test_q", seconds, quiet.claim(True, None, cluster, ("c1", "c2"), ()))


def test_a_quiet_check_waits_for_running_ones_and_later_shared_takers_queue_behind_it() -> None:
    mesh = Check("m", "test_mesh", 3.0, quiet.claim(False, None, None, ("c1", "c2"), ()))
    got = replay([
        RunSpec("c1", "cluster", 0.0, [_ordinary("c1", "o", 10.0)]),
        RunSpec("c2", "cluster", 1.0, [_quiet("c2", "q", 5.0)]),
        RunSpec("mesh", "lab", 2.0, [mesh]),
    ])  # fmt: skip
    # q waits for o (0-10) and runs alone 10-15; m, asking at 2, queues behind q: 15-18
    assert got.end_s == {"c1": 10.0, "c2": 15.0, "mesh": 18.0}
    assert got.wait_s == {"c1": 0.0, "c2": 9.0, "mesh": 13.0}
    assert got.wall_s == 18.0
    assert [(r, c, b, e) for r, c, _, b, e in got.trace] == [
        ("c1", "o", 0.0, 10.0), ("c2", "q", 10.0, 15.0), ("mesh", "m", 15.0, 18.0)
    ]  # fmt: skip


def test_a_breaker_shares_the_machine_with_the_other_cluster_but_not_its_own() -> None:
    cycle = quiet.claim(True, ("local",), None, ("c1", "c2"), ("c1", "c2"))
    got = replay([
        RunSpec("mesh", "lab", 0.0, [Check("fo", "test_mesh_failover", 20.0, cycle)]),
        RunSpec("c1", "cluster", 1.0, [_ordinary("c1", "o1", 5.0)]),
        RunSpec("c2", "cluster", 1.0, [_ordinary("c2", "o2", 5.0)]),
    ])  # fmt: skip
    assert got.end_s == {"mesh": 20.0, "c1": 25.0, "c2": 6.0}
    assert got.wait_s["c1"] == 19.0 and got.wait_s["c2"] == 0.0


def test_a_waiting_check_shares_its_window_and_takes_the_machine_back_after_running_ones() -> None:
    stop = Check("stop", "test_services", 30.0, quiet.claim(True, None, "c2", ("c1", "c2"), (),
                 waits=True), window=(5.0, 15.0))  # fmt: skip
    got = replay([
        RunSpec("c2", "cluster", 0.0, [stop]),
        RunSpec("c1", "cluster", 1.0, [_ordinary("c1", "o", 10.0), _ordinary("c1", "o2", 10.0)]),
    ])  # fmt: skip
    # o waits 1-5, runs in the window 5-15; o2 starts in it at 15 and runs to 25; the
    # re-take at 20 waits for o2; the 10 s left after the window run 25-35
    assert got.end_s == {"c2": 35.0, "c1": 25.0}
    assert got.wait_s == {"c2": 0.0, "c1": 4.0}


def test_a_quiet_check_of_another_cluster_waits_for_the_turn_held_through_a_window() -> None:
    stop = Check("stop", "test_services", 10.0, quiet.claim(True, None, "c2", ("c1", "c2"), (),
                 waits=True), window=(2.0, 6.0))  # fmt: skip
    got = replay([
        RunSpec("c2", "cluster", 0.0, [stop]),
        RunSpec("c1", "cluster", 1.0, [_quiet("c1", "q", 3.0)]),
    ])  # fmt: skip
    assert got.end_s == {"c2": 10.0, "c1": 13.0}  # never beside the window


def test_reorder_sorts_a_runs_checks_by_their_suites_rank_for_its_role_then_file_name() -> None:
    from harness.conformance.plugin import LOCKSTEP_ORDER

    suites = ("test_services", "test_latency", "test_workloads", "test_hygiene")
    checks = [Check(n, s, 1.0, ORDINARY) for n, s in zip("abcd", suites, strict=True)]
    run = RunSpec("c1", "cluster", 0.0, checks)

    def names(r: RunSpec) -> str:
        return "".join(c.name for c in r.checks)

    new = reorder(run, by_rank(LOCKSTEP_ORDER))
    assert names(new) == "cabd"
    assert names(reorder(new, by_rank(OLD_LOCKSTEP_ORDER))) == "acbd"  # by file name in 5
    mesh_first = by_rank(LOCKSTEP_ORDER, {"test_hygiene": 0})
    lab = RunSpec("mesh", "lab", 0.0, run.checks)
    assert names(reorder(lab, mesh_first)) == "dbac"
    assert names(reorder(run, mesh_first)) == "cabd"  # the lab's ranks are the mesh run's only


def test_the_suites_markers_are_read_from_their_source() -> None:
    marks = suite_marks()
    assert marks["test_stopped_node_leaves_every_service"].waits
    assert marks["test_stopped_node_leaves_every_service"].module == "test_services"
    cut = marks["test_remote_network_cut_removes_and_returns_its_backends"]
    assert cut.breaks == ("local", "remote") and not cut.waits
    assert marks["test_hard_kill_fails_only_until_readiness_detection"].breaks == ("local",)
    assert marks["test_pod_mtu_matches_mode"].breaks is None


def _results(tmp_path: Path) -> Path:
    def check(scenario: int, name: str, seconds: float, **labels: str) -> dict[str, object]:
        return {"scenario": scenario, "name": name, "mode": "host-gw", "outcome": "passed",
                "duration_s": seconds, "labels": labels}  # fmt: skip

    def timings(start: float, mode: float, wait: float) -> list[dict[str, object]]:
        pairs = (("start-up", start), ("mode", mode), ("quiet wait", wait))
        return [{"what": w, "seconds": s, "mode": "host-gw", "labels": {}} for w, s in pairs]

    c2 = {"checks": [
        check(3, "test_pod_mtu_matches_mode", 2.0, cluster="c2", machine="shared"),
        check(13, "test_stopped_node_leaves_every_service", 40.0, cluster="c2", machine="alone",
              machine_shared_s="20.0", machine_retake_s="2.0"),
        check(24, "test_path_mtu_across_clusters", 0.0, cluster="c2"),  # decided, never held
    ], "timings": timings(8.0, 42.0, 0.0)}  # fmt: skip
    mesh = {"checks": [
        check(26, "test_remote_network_cut_removes_and_returns_its_backends", 10.0,
              machine="shared"),
        check(24, "test_path_mtu_across_clusters", 3.0, machine="shared"),
    ], "timings": timings(7.0, 30.0, 17.0)}  # fmt: skip
    c1 = {"checks": [check(1, "test_pod_reaches_pod[same-node-icmp]", 1.0, cluster="c1",
                           machine="shared")], "timings": timings(8.0, 1.0, 0.0)}  # fmt: skip
    after = {"checks": [], "timings": [{"what": "phase host-gw", "seconds": 55.5, "mode": ""}]}
    for name, data in (("a-c1", c1), ("a-c2", c2), ("a", mesh), ("z-after-down", after)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    return tmp_path


def test_a_phase_is_read_from_its_results_with_each_checks_claim(tmp_path: Path) -> None:
    runs = {r.name: r for r in load_phase(_results(tmp_path), "host-gw", suite_marks())}
    assert set(runs) == {"c1", "c2", "mesh"}
    c2, mesh = runs["c2"], runs["mesh"]
    assert (c2.role, c2.start_s, c2.recorded_end_s) == ("cluster", 8.0, 50.0)
    assert [c.name for c in c2.checks] == ["test_pod_mtu_matches_mode",
                                          "test_stopped_node_leaves_every_service"]  # fmt: skip
    stop = c2.checks[1]
    assert stop.claim == quiet.Claim(True, (), ("c2",), turn=True, waits=True)
    assert stop.seconds == 38.0 and stop.window == (6.0, 20.0)  # re-take out, 12 s tail
    cut = mesh.checks[0]
    assert cut.claim == quiet.Claim(False, (), ("c1", "c2"), turn=True)
    assert mesh.role == "lab" and mesh.recorded_wait_s == 17.0
    assert phase_timing(tmp_path, "host-gw") == 55.5 and phase_timing(tmp_path, "bgp") is None


def test_the_command_prints_each_order_and_refuses_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(_results(tmp_path)), "--order", "ran", "--order", "new"]) == 0
    out = capsys.readouterr().out
    assert "== host-gw: recorded phase 55.5 s" in out
    assert "ran" in out and "new" in out and "predicted" in out
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "not a results directory" in capsys.readouterr().err
