"""podlab load's plan, manifests and results (harness/load/run.py, report.py, cost.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.api.objects import NodeRecord
from harness.api.target import Target
from harness.load import cost, hold, run
from harness.load.report import record_results, slis_of
from harness.results.store import load


def nodes() -> list[NodeRecord]:
    return [NodeRecord(name="w1"), *(NodeRecord(name=f"h{i}", hollow=True) for i in range(3))]


def test_pods_are_spread_node_by_node_and_grouped_in_order() -> None:
    cfg = run.LoadConfig(pods_per_node=5, group_size=3)
    plan = run.plan_pods(nodes(), cfg)
    assert len(plan) == 20
    assert [p.node for p in plan[:5]] == ["w1", "h0", "h1", "h2", "w1"]
    assert sum(1 for p in plan if p.node == "w1") == 5
    assert [p.group for p in plan[:7]] == [0, 0, 0, 1, 1, 1, 2]
    assert {p.hollow for p in plan if p.node == "w1"} == {False}
    groups = {}
    for p in plan:
        groups.setdefault(p.group, set()).add(p.hollow)
    assert any(kinds == {True, False} for kinds in groups.values())  # mixed endpoints


def test_services_are_every_other_group_or_the_count_asked_spread_evenly() -> None:
    assert run.service_groups(7, run.LoadConfig()) == [0, 2, 4, 6]  # CL2: half the groups
    # the SIG-scalability envelope: 30,000 pods and 10,000 Services, one group each
    cfg = run.LoadConfig(pods_per_node=30, group_size=3, services=10_000)
    groups = run.group_count(30_000, cfg)
    assert groups == 10_000 and run.service_groups(groups, cfg) == list(range(10_000))
    cfg = run.LoadConfig(group_size=1, services=3)
    assert run.service_groups(10, cfg) == [0, 3, 6]  # spread, each group once
    assert run.service_groups(10, run.LoadConfig(services=0)) == []
    spread = run.service_groups(3009, run.LoadConfig(group_size=1, services=1000))
    assert len(set(spread)) == 1000 and max(spread) < 3009


def test_load_refuses_more_services_than_groups_naming_the_fix() -> None:
    import pytest

    from harness.errors import UserError, problem_line
    from harness.load.cli import check_fit

    many = [NodeRecord(name=f"h{i}", podCIDR="10.244.0.0/24") for i in range(100)]
    cfg = run.LoadConfig(pods_per_node=3, group_size=3, services=101)  # 100 groups
    with pytest.raises(UserError) as exc:
        check_fit(many, cfg, "10.96.0.0/16", "c1")
    line = problem_line(exc.value.problems[0])
    assert "--services" in line and "100 groups of 3" in line and "--services 100" in line
    check_fit(many, run.LoadConfig(pods_per_node=3, group_size=3, services=100), None, "c1")
    cfg = run.LoadConfig(pods_per_node=30, group_size=1, services=3000)
    with pytest.raises(UserError) as exc:  # 3,000 do not fit a /24's 244
        check_fit(many, cfg, "10.96.0.0/24", "c1")
    assert "use --services 244 or fewer" in problem_line(exc.value.problems[0])


def test_the_samplers_lists_read_about_a_thousand_pods_a_second_at_most() -> None:
    assert run.list_period(0) == run.list_period(1000) == 1.0
    assert run.list_period(3009) == 3.009 and run.list_period(30_000) == 30.0


def test_manifests_pass_podlab_validation() -> None:
    cfg = run.LoadConfig()
    p = run.plan_pods(nodes(), cfg)[0]
    pod = run.located(run.pod_manifest(p, "r1", cfg))[0]
    assert pod.obj.metadata.labels == {run.LABEL: "r1", "group": "g0"}
    svc = run.located(run.service_manifest(0, "r1", cfg))[0]
    assert svc.info.kind == "Service" and svc.obj.metadata.namespace == "podlab-load"


def samples() -> run.Samples:
    s = run.Samples()
    for i in range(10):
        s.created[f"r{i}"], s.running[f"r{i}"], s.hollow[f"r{i}"] = 100.0, 100.1 + i / 100, False
        s.created[f"h{i}"], s.running[f"h{i}"], s.hollow[f"h{i}"] = 100.0, 100.01, True
    s.created["late"], s.hollow["late"] = 100.0, True  # never ran: not a sample
    s.api["mutating"] = [0.01] * 9 + [2.0]
    hist = {"le": [0.25, 0.5, 1.0], "counts": [0, 0, 0]}
    s.netprog_before = {"w1": hist}
    s.netprog_after = {"w1": {"le": [0.25, 0.5, 1.0], "counts": [8, 10, 10]}}
    s.dns_s, s.dns_errors = [0.001] * 99, 1
    return s


def test_slis_of_a_run() -> None:
    got = {(x.family, x.labels.get("kind", "")): x for x in slis_of(samples())}
    assert abs(got[("pod_startup", "real")].p[99] - 0.19) < 1e-9
    assert got[("pod_startup", "hollow")].samples == 10
    assert got[("api_mutating", "")].passed is False  # one call of 2 s is the p99
    assert ("api_get", "") not in got  # no samples: left out, not zero
    np = got[("network_programming", "")]
    assert np.samples == 10 and np.p[50] <= 0.25 and np.passed is True
    assert got[("dns_lookup", "")].passed is True


def test_results_file_and_perfdata(tmp_path: Path) -> None:
    c = cost.Cost(rss={("cp", "hollow"): 100 * 2**20, ("cp", "etcd"): 2**20},
                  cores={("cp", "hollow"): 0.5, ("cp", "etcd"): 0.1})  # fmt: skip
    path = tmp_path / "load.json"
    _, lines = record_results(
        path, "load-x", Target("c1", "http://x", None), samples(), c, 100, 1, run.LoadConfig()
    )
    res = load(path)
    by = {(m.name, m.labels.get("kind", m.labels.get("verb", ""))): m for m in res.measurements}
    assert by[("pod_startup_p99_s", "real")].threshold == 5.0
    assert by[("pod_startup_p50_s", "real")].threshold is None
    assert by[("api_call_p99_s", "mutating")].passed is False
    assert by[("dns_errors_percent", "")].passed is False  # 1 in 100 > 0.1 %
    per = [m for m in res.measurements if m.labels.get("process") == "hollow-per-node"]
    assert {m.name: m.value for m in per} == {"rss_bytes": 2**20, "cpu_cores": 0.005}
    assert any("per node" in ln for ln in lines)
    perf = json.loads(path.with_suffix(".perfdata.json").read_text())
    assert {i["labels"]["Metric"] for i in perf["dataItems"]} >= {"pod_startup", "dns_lookup"}
    assert not any(m.name.startswith("hold_") for m in res.measurements)  # no --hold: none


def test_a_hold_is_judged_zero_dead_zero_lost(tmp_path: Path) -> None:
    c = cost.Cost(rss={}, cores={})
    for dead, verdict in ((set(), True), ({"h7"}, False)):
        s = samples()
        s.held = hold.HoldResult(600.0, 1003, 1003, 120, dead, set(), 12.5)
        path = tmp_path / f"load-{len(dead)}.json"
        _, lines = record_results(
            path, "load-x", Target("c1", "http://x", None), s, c, 1000, 3, run.LoadConfig()
        )
        by = {m.name: m for m in load(path).measurements}
        dead_count = by["hold_nodes_dead_count"]
        assert dead_count.passed is verdict and dead_count.threshold == 0
        assert by["hold_leases_lost_count"].passed is True
        assert any(ln.startswith(f"hold 600 s over 1003 nodes, 120 samples: {len(dead)}")
                   for ln in lines)  # fmt: skip


def test_cost_finds_this_process_by_its_network_namespace() -> None:
    assert cost.role_of(["/usr/bin/etcd", "--name", "x"]) == "etcd"
    assert cost.role_of(["python", "-m", "harness.hollow", "--nodes", "3"]) == "hollow"
    assert cost.role_of(["python", "-m", "harness.agent"]) == "agent"
    assert cost.role_of(["sleep", "1"]) is None
    found = cost.processes({"here": Path(f"/proc/{os.getpid()}/ns/net")})
    assert all(node == "here" for node, _ in found)  # nothing outside the namespace given


def test_load_refuses_sizes_that_do_not_fit_before_anything_starts() -> None:
    import argparse

    import pytest

    from harness.errors import UserError, problem_line
    from harness.load.cli import check_args, check_fit

    small = [NodeRecord(name="w1", podCIDR="10.244.1.0/27")]  # 29 pod addresses
    with pytest.raises(UserError) as exc:
        check_fit(small, run.LoadConfig(pods_per_node=30), "10.96.0.0/16", "c1")
    line = problem_line(exc.value.problems[0])
    assert "10.244.1.0/27 holds 29 pods" in line and "--pods-per-node 29" in line
    many = [NodeRecord(name=f"h{i}", podCIDR="10.244.0.0/24") for i in range(100)]
    with pytest.raises(UserError) as exc:
        check_fit(many, run.LoadConfig(pods_per_node=30, group_size=1), "10.96.0.0/24", "c1")
    assert "Services do not fit the service CIDR" in problem_line(exc.value.problems[0])
    check_fit(many, run.LoadConfig(), "10.96.0.0/16", "c1")  # the default fits
    ok = {"pods_per_node": 1, "rate": 10.0, "group_size": 10, "churn": 0.5, "hold": 0.0,
          "node_grace": 40.0, "services": None, "workers": 4}  # fmt: skip
    check_args(argparse.Namespace(**ok))
    args = argparse.Namespace(**{**ok, "pods_per_node": 0})
    with pytest.raises(UserError) as exc:
        check_args(args)
    assert [p.file for p in exc.value.problems] == ["podlab load"]
    with pytest.raises(UserError) as exc:
        check_args(argparse.Namespace(**{**ok, "hold": -1.0, "node_grace": 0.0}))
    assert [p.where for p in exc.value.problems] == ["--hold", "--node-grace"]


def test_cpu_waited_for_shows_starvation_and_not_work() -> None:
    """Two busy processes pinned to one CPU each wait about half the time (positive
    control); a process that sleeps waits for no CPU (negative control)."""
    import subprocess
    import sys
    import time

    spin = "import time\nt=time.time()\nwhile time.time()-t<3: pass"
    cpu = str(sorted(os.sched_getaffinity(0))[0])
    busy = [subprocess.Popen(["taskset", "-c", cpu, sys.executable, "-c", spin]) for _ in range(2)]
    idle = subprocess.Popen([sys.executable, "-c", "import time; print(1, flush=True); "
                             "time.sleep(1.5)"], stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert idle.stdout is not None and idle.stdout.readline()  # started: sleeping now
        before = {p.pid: cost.runqueue_s(p.pid) for p in [*busy, idle]}
        time.sleep(1.0)
        waited = {pid: cost.runqueue_s(pid) - s for pid, s in before.items()}
    finally:
        for p in [*busy, idle]:
            p.wait(timeout=10)
    assert sum(waited[p.pid] for p in busy) > 0.5  # ~1 s of the two's 2 s was waiting
    assert waited[idle.pid] < 0.05
    assert cost.runqueue_s(2**22 + 12345) == 0.0  # no such process


def test_a_restarted_process_is_followed_not_subtracted() -> None:
    """A lab process that exits inside the window (an agent restarted) keeps what it
    used, and its successor of the same role is counted from zero: the two busy spells
    add up (before, the successor's ticks were subtracted from the first's and the
    role read negative)."""
    import subprocess
    import sys
    import time

    spin = (
        "import sys, time\nsys.stdin.readline()\nt = time.process_time()\n"
        "while time.process_time() - t < 0.4: pass\nprint(1, flush=True)\ntime.sleep(30)"
    )
    here = {"here": Path(f"/proc/{os.getpid()}/ns/net")}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", spin, "harness.hollow"], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip

    def spend(p: subprocess.Popen[str]) -> None:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline()  # 0.4 s of CPU spent

    first = start()
    time.sleep(0.3)  # its interpreter is up, waiting on stdin
    sampler = cost.CostSampler(here, every=0.05)
    assert ("here", "hollow") in sampler.pids
    sampler.start()
    t0 = time.monotonic()
    second = None
    try:
        spend(first)
        time.sleep(0.2)  # sampled after the spell
        first.kill()
        first.wait()
        second = start()
        time.sleep(0.3)  # the sampler finds it
        spend(second)
        time.sleep(0.2)
        t1 = time.monotonic()
        used = sampler.finish().cores[("here", "hollow")] * (t1 - t0) * cost.TICK
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert used >= 0.6 * cost.TICK  # both spells (0.8 s of CPU), not their difference
