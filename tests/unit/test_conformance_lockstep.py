"""The lockstep run of a meshed lab (ADR 0018, amendment): phase order, the deal of an
entry's checks between the clusters, the plan printed before the run, the plugin's
``--entry``/``--deal`` and scenario 21's plan of a native mesh's router sessions."""

from __future__ import annotations

import ipaddress
import itertools
import json
from pathlib import Path

import pytest

from harness.agent import bird
from harness.conformance import cli, matrix
from harness.conformance.catalogue import CATALOGUE, LabShape, declare
from harness.conformance.labctl import Lab
from harness.conformance.modes import ModeSpec
from harness.conformance.suites import test_bgp as bgp_suite
from harness.plan.build import load_plan

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
TWO = REPO / "topologies" / "two-clusters.clab.yml"
SINGLE = REPO / "topologies" / "single-cluster.clab.yml"
PLUGIN = () if cli.plugin_installed() else ("-p", "harness.conformance.plugin")


def _shape(path: Path) -> LabShape:
    return LabShape.of(load_plan(path))


def test_phases_start_where_the_first_deploy_left_the_lab_and_take_cheap_switches() -> None:
    default = matrix.preset("default")
    order = matrix.phases(default)
    assert sorted(map(str, order)) == sorted(default.modes)  # every entry once
    assert order[0] == default.entries[0]
    assert [str(e) for e in order] == [
        "host-gw", "vxlan", "udp", "host-gw+wireguard", "calico-vxlan+wireguard",
        "calico-vxlan", "ipip", "cross-subnet", "bgp",
    ]  # fmt: skip
    # one change of pod interface family (the costliest re-plumb) in the whole order
    fams = [matrix.families(e)[0] for e in order]
    assert sum(a != b for a, b in itertools.pairwise(fams)) == 1
    total = sum(matrix.switch_cost(a, b) for a, b in itertools.pairwise(order))
    in_matrix_order = default.entries
    assert total < sum(matrix.switch_cost(a, b) for a, b in itertools.pairwise(in_matrix_order))


def test_only_a_lab_whose_clusters_share_one_mesh_runs_in_lockstep() -> None:
    assert matrix.lockstep(_shape(TWO))
    assert not matrix.lockstep(_shape(SINGLE))
    apart = LabShape("t", clusters=2, outside_hosts=1, max_segments_per_cluster=1, meshed=0)
    assert not matrix.lockstep(apart)


@pytest.mark.parametrize("entry", ["host-gw", "bgp", "calico-vxlan+wireguard", "vxlan"])
def test_an_entry_s_cluster_checks_are_dealt_whole_and_balanced(entry: str) -> None:
    default, lab, spec = matrix.preset("default"), _shape(TWO), ModeSpec.parse(entry)
    shares = matrix.deal(default, lab, spec, 2)
    dealt = [n for s in shares for n in s]
    cluster_scope = [n for n, s in CATALOGUE.items() if s.scope == "cluster" and n != 23]
    assert sorted(dealt) == sorted(cluster_scope)  # each once, in exactly one share
    assert 23 not in dealt  # measured at the whole-lab switch after the phase
    assert not {24, 25, 26, 27} & set(dealt)  # the mesh's run does those
    seconds = [matrix.deal_seconds(default, lab, spec, s) for s in shares]
    biggest = max(
        (matrix.scenario_seconds(n, CATALOGUE[n].cost) for n in dealt
         if matrix.decide(declare(n), spec, default, lab).state == "run"),
        default=0.0,
    )  # fmt: skip
    assert abs(seconds[0] - seconds[1]) <= biggest  # LPT: apart by at most one scenario

    def loud(share: tuple[int, ...]) -> float:  # what two runs can do at once
        return matrix.deal_seconds(default, lab, spec, [n for n in share if not CATALOGUE[n].quiet])

    loud_max = max((loud((n,)) for n in dealt), default=0.0)
    assert abs(loud(shares[0]) - loud(shares[1])) <= loud_max
    assert matrix.deal(default, lab, spec, 2) == shares  # every run of a phase agrees


def test_once_per_run_checks_go_to_one_cluster_only() -> None:
    default, lab = matrix.preset("default"), _shape(TWO)
    shares = matrix.deal(default, lab, ModeSpec.parse("host-gw"), 2)
    for number in (31, 32, 33):
        assert sum(number in s for s in shares) == 1


def test_the_plan_says_which_cluster_runs_what_and_where_the_mesh_checks_are() -> None:
    default, plan = matrix.preset("default"), load_plan(TWO)
    lines = matrix.lockstep_lines(default, LabShape.of(plan), list(plan.clusters))
    assert lines[0].startswith("lockstep: 7 phases") and "2 of them pairs" in lines[0]
    by_entry = {line.split()[1]: line for line in lines[1:]}
    assert "mesh 24,25,26,27" in by_entry["host-gw"]
    assert "mesh 24,25,26,27" in by_entry["calico-vxlan+wireguard"]
    assert by_entry["bgp"].endswith("mesh 24") and by_entry["cross-subnet"].endswith("mesh -")
    assert "c1 " in by_entry["host-gw"] and "; c2 " in by_entry["host-gw"]
    assert " 21" in by_entry["bgp"] or ",21" in by_entry["bgp"]
    # a pair: each cluster its own entry, all of its checks, no mesh run, and why
    pair = by_entry["vxlan"]
    assert pair.split()[1:4] == ["vxlan", "|", "udp"]
    assert "c1 vxlan 1,2,3,4,19,28,29,30 " in pair and "; c2 udp 1,2,3,4,19,28,29,30 " in pair
    assert "mesh -; paired: both light" in pair and "tunnel routing, encryption none" in pair
    assert lines[-1].startswith("  unpaired light: host-gw+wireguard, cross-subnet")
    # 23: at the switch after the one phase the default matrix selects it in (the first)
    assert by_entry["host-gw"].endswith("; then 23 at the switch to vxlan | udp")
    assert sum("23" in line for line in lines) == 1
    out = matrix.lab_lines(default, str(TWO))
    assert any(line.startswith("lockstep: ") for line in out)
    assert not any(line.startswith("lockstep") for line in matrix.lab_lines(default, str(SINGLE)))


SUITE = """
import pytest

@pytest.mark.scenario(1)
def test_light(mode):
    pass

@pytest.mark.scenario(10)
def test_heavy(mode):
    pass

@pytest.mark.scenario(23)
def test_once(mode):
    pass

@pytest.mark.scenario(20)
def test_strict(mode):
    pass

@pytest.mark.scenario(24)
def test_mesh(mode):
    pass
"""


def _collect(pytester: pytest.Pytester, out: Path, *args: str) -> tuple[set[str], dict]:
    result = pytester.runpytest_inprocess(
        *PLUGIN, f"--topology={TWO}", "--matrix=default", f"--results={out}", "--collect-only",
        "-q", *args,
    )  # fmt: skip
    assert result.ret in (0, 5), result.stderr.str()
    ids = {line.split("::")[1] for line in result.outlines if "::" in line}
    files = sorted(out.glob("*.json"))
    data = json.loads(files[-1].read_text()) if files else {}
    for f in files:
        f.unlink()
    return ids, data


def test_the_shares_of_an_entry_run_every_check_once_and_record_every_decision_once(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_m=SUITE)
    out = pytester.path / "out"
    got = {}
    for k, c in ((1, "c1"), (2, "c2")):
        got[c] = _collect(pytester, out, "--entry=host-gw", "--scope=cluster",
                          f"--cluster={c}", f"--deal={k}/2")  # fmt: skip
    mesh_ids, mesh_data = _collect(pytester, out, "--entry=host-gw", "--scope=lab")
    (ids1, d1), (ids2, d2) = got["c1"], got["c2"]
    assert not ids1 & ids2
    assert ids1 | ids2 == {"test_light[host-gw]", "test_heavy[host-gw]"}
    # 23 runs at the whole-lab switch after the phase: recorded once, by the first share
    once = [(c["mode"], c["outcome"], c["message"]) for d in (d1, d2) for c in d["checks"]
            if c["name"] == "test_once"]  # fmt: skip
    assert once == [
        (
            "host-gw",
            "not-selected",
            "not selected in this run: measured at the "
            "whole-lab switch after this phase (harness.conformance.switchflows)",
        )
    ]
    assert mesh_ids == {"test_mesh[host-gw]"}
    # the strict-mode check does not apply in host-gw: recorded once, by the share that has 20
    na = [c for d in (d1, d2, mesh_data) for c in d.get("checks", []) if c["name"] == "test_strict"]
    assert [(c["mode"], c["outcome"]) for c in na] == [("host-gw", "not-applicable")]
    assert {m["cluster"] for m in d1["plan"]["modes"] if m["mode"] == "host-gw"} == {"c1+c2"}
    ids_vx, data_vx = _collect(pytester, out, "--entry=vxlan", "--scope=lab")
    assert ids_vx == set()  # 24 is heavy: not selected in vxlan, and recorded as such
    assert [c["outcome"] for c in data_vx["checks"]] == ["not-selected"]
    ids_bgp, data_bgp = _collect(pytester, out, "--entry=bgp", "--scope=cluster",
                                 "--cluster=c1", "--deal=1/2")  # fmt: skip
    assert "test_once[bgp]" not in ids_bgp  # once per run: host-gw's switch measures it
    assert [c["outcome"] for c in data_bgp["checks"] if c["name"] == "test_once"] == [
        "not-selected"
    ]


def test_a_phase_with_no_mesh_check_to_run_has_its_decisions_recorded_by_c1_s_share(
    pytester: pytest.Pytester,
) -> None:
    """An idle mesh run (vxlan: 24 is heavy, not selected there) costs a whole pytest
    start beside c1's and c2's; c1's share records its decisions instead, once."""
    pytester.makepyfile(test_m=SUITE)
    out = pytester.path / "out"
    _, alone = _collect(pytester, out, "--entry=vxlan", "--scope=lab")
    ids, data = _collect(pytester, out, "--entry=vxlan", "--scope=cluster", "--cluster=c1",
                         "--deal=1/2", "--lab-decisions")  # fmt: skip
    assert "test_mesh[vxlan]" not in ids
    mine = [(c["name"], c["mode"], c["outcome"]) for c in data["checks"] if c["scenario"] == 24]
    theirs = [(c["name"], c["mode"], c["outcome"]) for c in alone["checks"]]
    assert mine == theirs == [("test_mesh", "vxlan", "not-selected")]
    _, data2 = _collect(pytester, out, "--entry=vxlan", "--scope=cluster", "--cluster=c2",
                        "--deal=2/2")  # fmt: skip
    assert not [c for c in data2.get("checks", []) if c["scenario"] == 24]  # recorded once
    # where a mesh check runs, the flag refuses: the phase needs its mesh run
    result = pytester.runpytest_inprocess(
        *PLUGIN, f"--topology={TWO}", "--matrix=default", "--collect-only", "--entry=host-gw",
        "--scope=cluster", "--cluster=c1", "--deal=1/2", "--lab-decisions",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lab-decisions: scenario 24 (test_mesh) runs in host-gw*"])


def test_the_script_starts_a_mesh_run_only_in_phases_where_a_mesh_check_runs() -> None:
    default, lab = matrix.preset("default"), _shape(TWO)
    runs = {str(e): matrix.mesh_runs(default, lab, e) for e in matrix.phases(default)}
    assert [e for e, r in runs.items() if r] == ["host-gw", "calico-vxlan+wireguard", "bgp"]
    assert runs["bgp"] == [24]
    assert matrix.main(["--topology", str(TWO), "--entries", "--phases", "--mesh"]) == 0


def test_bad_lockstep_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_m=SUITE)
    for args, message in (
        (("--deal=1/2",), "*--deal K/N needs --entry MODE*"),
        (("--entry=geneve",), "*unknown mode 'geneve'*"),
        (("--entry=vxlan+wireguard",), "*--entry vxlan+wireguard: not an entry of matrix default*"),
        (("--entry=vxlan", "--deal=3/2"), "*--deal '3/2': write K/N*"),
        (
            ("--entry=vxlan", "--scope=lab", "--lab-decisions"),
            "*--lab-decisions goes with --scope cluster and --entry MODE*",
        ),
        (("--entry=vxlan", "--ssh-keep=../c1"), "*--ssh-keep '../c1': name the role in a-z*"),
    ):
        result = pytester.runpytest_inprocess(
            *PLUGIN, f"--topology={TWO}", "--matrix=default", "--collect-only", *args
        )
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([message])


def _lab(path: Path) -> Lab:
    plan = load_plan(path)
    return Lab(plan.name, Path("/nonexistent"), plan, Path("/nonexistent.yml"))


def _session(name: str, info: str = "Established") -> bird.Session:
    return bird.Session(name, "BGP", "---", "up" if info == "Established" else "start", "", info)


def test_a_meshed_node_plans_its_router_sessions_and_a_lone_one_none() -> None:
    lab = _lab(TWO)
    nodes = [n.name for n in lab.plan.cluster_nodes("c1")]
    routers = bgp_suite.router_sessions(lab, nodes)
    assert all(r == {"router_router"} for r in routers.values()), routers
    ips = {n: ipaddress.IPv4Address(f"10.0.0.{i}") for i, n in enumerate(nodes, 1)}
    planned = bgp_suite.planned_sessions(ips, [], routers)
    me = nodes[0]
    peers = {f"peer_{n.replace('-', '_')}" for n in nodes[1:]}
    assert planned[me] == peers | {"router_router"}
    single = _lab(SINGLE)
    alone = [n.name for n in single.plan.cluster_nodes("c1")]
    assert bgp_suite.router_sessions(single, alone) == {n: set() for n in alone}


def test_sessions_against_the_plan_with_a_negative_control() -> None:
    peers = {"peer_c1_w1", "peer_c1_w2"}
    with_router = peers | {"router_router"}
    up = [_session(p) for p in sorted(with_router)]
    assert bgp_suite.session_problems("c1-cp", with_router, up) == []
    # control: the same sessions against a plan without the router (a cluster not in a
    # native mesh) are refused: the check does not accept any session it finds
    assert bgp_suite.session_problems("c1-cp", peers, up) == [
        "c1-cp: unplanned sessions router_router"
    ]
    # a planned router session that is not up (the routers were not deployed for bgp)
    down = [_session(p) for p in sorted(peers)] + [_session("router_router", "Active")]
    assert bgp_suite.session_problems("c1-cp", with_router, down) == [
        "c1-cp: not Established: router_router (start Active)"
    ]


ORDERED = {
    "test_latency": "import pytest\n\n@pytest.mark.scenario(29)\ndef test_lat(mode):\n    pass\n",
    "test_services": "import pytest\n\n@pytest.mark.scenario(7)\ndef test_svc(mode):\n    pass\n",
    "test_hygiene": "import pytest\n\n@pytest.mark.scenario(30)\ndef test_hyg(mode):\n    pass\n",
}


def _order(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest_inprocess(
        *PLUGIN, f"--topology={TWO}", "--matrix=default", "--collect-only", "-q", *args
    )
    assert result.ret == 0, result.stderr.str()
    return [line.split("::")[1] for line in result.outlines if "::" in line]


def test_a_lockstep_run_takes_its_quiet_only_suites_after_the_others_before_hygiene(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(**ORDERED)
    lockstep = _order(pytester, "--entry=host-gw", "--scope=cluster", "--cluster=c1")
    assert lockstep == ["test_svc[host-gw]", "test_lat[host-gw]", "test_hyg[host-gw]"]
    alone = _order(pytester, "--mode=host-gw")  # a run of its own keeps MODULE_ORDER
    assert alone == ["test_lat[host-gw]", "test_svc[host-gw]", "test_hyg[host-gw]"]


def _suite(name: str, scenario: int) -> str:
    return f"import pytest\n\n@pytest.mark.scenario({scenario})\ndef test_{name}(mode):\n    pass\n"


def test_a_lockstep_run_takes_the_suites_mixing_quiet_checks_after_the_ordinary_only_ones(
    pytester: pytest.Pytester,
) -> None:
    """Ordinary-only suites, then those mixing ordinary and quiet checks (services, policy),
    then the quiet-only ones, hygiene before the faults, the switch last
    (docs/adr/0018-mesh-in-the-default-run.md, amendment 7)."""
    pytester.makepyfile(
        test_workloads=_suite("wl", 1), test_services=_suite("svc", 7),
        test_policy=_suite("pol", 17), test_throughput=_suite("tput", 28),
        test_slo=_suite("slo", 5), test_hygiene=_suite("hyg", 30), test_faults=_suite("flt", 6),
        test_modeswitch=_suite("sw", 2), test_dns=_suite("dns", 15),
    )  # fmt: skip
    lockstep = _order(pytester, "--entry=host-gw", "--scope=cluster", "--cluster=c1")
    assert [n.removesuffix("[host-gw]") for n in lockstep] == [
        "test_dns", "test_wl", "test_pol", "test_svc", "test_tput", "test_slo", "test_hyg",
        "test_flt", "test_sw",
    ]  # fmt: skip
    alone = _order(pytester, "--mode=host-gw")  # a run of its own keeps MODULE_ORDER
    assert [n.removesuffix("[host-gw]") for n in alone] == [
        "test_tput", "test_slo", "test_dns", "test_pol", "test_svc", "test_wl", "test_hyg",
        "test_flt", "test_sw",
    ]  # fmt: skip


def test_a_breaks_marker_naming_no_role_of_the_mesh_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    result = _collect_marked(pytester, "@pytest.mark.breaks('far')")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_fo*breaks(far): name roles of the mesh (local, remote)*"])


def _collect_marked(pytester: pytest.Pytester, marks: str) -> pytest.RunResult:
    """Collect, in a lockstep entry of two-clusters, one scenario-26 test with ``marks``."""
    pytester.makepyfile(
        test_m=f"import pytest\n\n@pytest.mark.scenario(26)\n{marks}\n"
        "def test_fo(mode):\n    pass\n"
    )
    return pytester.runpytest_inprocess(
        *PLUGIN, f"--topology={TWO}", "--matrix=default", "--collect-only", "--entry=host-gw"
    )


def test_the_failover_suite_holds_a_always_and_b_for_its_cut_and_outage() -> None:
    from harness.conformance.suites import test_mesh_failover as fo

    def roles(test: object) -> tuple[str, ...] | None:
        marks = [m for m in getattr(test, "pytestmark", []) if m.name == "breaks"]
        return tuple(marks[0].args) if marks else None

    both = ("local", "remote")
    assert roles(fo.test_remote_network_cut_removes_and_returns_its_backends) == both
    assert roles(fo.test_remote_etcd_outage_breaks_no_flow_and_removes_nothing) == both
    assert roles(fo.test_graceful_delete_of_every_local_backend_loses_no_request) == ("local",)
    assert roles(fo.test_flip_back_spreads_the_return) == ("local",)
    assert roles(fo.test_hard_kill_fails_only_until_readiness_detection) == ("local",)


def test_a_test_marked_breaks_and_waits_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = _collect_marked(pytester, "@pytest.mark.breaks('local')\n@pytest.mark.waits")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_fo*: marked breaks and waits; one of them*"])


def test_only_the_node_stop_shares_the_machine_while_it_waits() -> None:
    """The quiet tests marked ``waits``: 13's node stop (the node grace); every other quiet
    scenario's test measures throughout and holds it alone (23 switches no cluster back
    any more: in a lockstep run it is measured at the whole-lab switch)."""
    import inspect

    from harness.conformance import catalogue
    from harness.conformance.suites import test_faults, test_modeswitch, test_services, test_slo

    waiting = set()
    for module in (test_faults, test_modeswitch, test_services, test_slo):
        for name, test in inspect.getmembers(module, inspect.isfunction):
            marks = {m.name: m for m in getattr(test, "pytestmark", [])}
            quiet = "scenario" in marks and catalogue.CATALOGUE[marks["scenario"].args[0]].quiet
            if quiet and "waits" in marks:
                waiting.add(name)
    assert waiting == {"test_stopped_node_leaves_every_service"}


def test_the_node_stop_predicts_the_verdict_from_the_victims_last_heartbeat() -> None:
    """13's node stop shares the machine until RETAKE_LEAD_S before the verdict: the
    stopped node's last heartbeat (its record's) + the grace, from now."""
    from types import SimpleNamespace

    from harness.api.objects import NodeRecord
    from harness.conformance.suites.test_services import _verdict_in_s

    now = 1_000_000.0
    records = [NodeRecord(name="c2-w2", heartbeat=now - 1.0),
               NodeRecord(name="c2-w1", heartbeat="1970-01-12T13:46:28Z")]  # fmt: skip
    client = SimpleNamespace(nodes=lambda: records, clock=lambda: now)
    lab = SimpleNamespace(client=lambda: client)
    assert _verdict_in_s(lab, "c2-w2", 40.0) == 39.0  # type: ignore[arg-type]
    # 1970-01-12T13:46:28Z is epoch 999,988: 12 s ago
    assert _verdict_in_s(lab, "c2-w1", 40.0) == 28.0  # type: ignore[arg-type]
    assert _verdict_in_s(lab, "c2-cp", 40.0) is None  # type: ignore[arg-type]


def test_23_is_measured_at_the_switch_after_the_phases_the_matrix_selects_it_in() -> None:
    lab = _shape(TWO)
    default, full = matrix.preset("default"), matrix.preset("full")
    assert [str(e) for e in matrix.switch_flows(default, lab)] == ["host-gw"]  # once: the first
    assert matrix.switch_flows(full, lab) == matrix.phases(full)[:-1]  # every switch
    custom = matrix.preset("default", ["vxlan", "udp", "ipip"])
    assert [str(e) for e in matrix.switch_flows(custom, lab)] == ["vxlan"]
    assert matrix.switch_flows(matrix.preset("default", ["vxlan"]), lab) == ()  # no switch


def test_a_lockstep_phase_leaves_23_to_the_switch_and_the_last_phase_has_none() -> None:
    lab, full = _shape(TWO), matrix.preset("full")
    order = matrix.phases(full)
    d23, d1 = declare(23), declare(1)
    first = matrix.lockstep_decision(d23, order[0], full, lab)
    assert first.state == "not-selected" and "measured at the whole-lab switch" in first.reason
    last = matrix.lockstep_decision(d23, order[-1], full, lab)
    assert last.state == "not-applicable" and "last phase" in last.reason
    assert matrix.decide(d23, order[-1], full, lab).state == "run"  # the session's decision
    default = matrix.preset("default")
    assert matrix.lockstep_decision(d23, ModeSpec.parse("vxlan"), default, lab) == matrix.decide(
        d23, ModeSpec.parse("vxlan"), default, lab
    )  # not selected there anyway: the matrix's reason stands
    for e in order:  # every other scenario keeps the matrix's decision
        assert matrix.lockstep_decision(d1, e, full, lab) == matrix.decide(d1, e, full, lab)


def test_the_switch_flows_plan_needs_a_topology(capsys: pytest.CaptureFixture[str]) -> None:
    assert matrix.main(["--switch-flows"]) == 2
    assert capsys.readouterr().out.strip().splitlines() == [
        "podlab: --switch-flows needs --topology FILE (the lab's shape decides)"
    ]
    assert matrix.main(["--matrix", "full", "--switch-flows", "--topology", str(TWO)]) == 0
    want = [str(e) for e in matrix.phases(matrix.preset("full"))[:-1]]
    assert capsys.readouterr().out.split() == want


# --- pairs (amendment 8): two light entries, one per cluster, in one phase ----------


def test_light_entries_pair_by_their_properties_in_the_cheapest_order() -> None:
    default, lab = matrix.preset("default"), _shape(TWO)
    order = matrix.lockstep_phases(default, lab)
    assert [str(p) for p in order] == [
        "host-gw", "vxlan | udp", "host-gw+wireguard", "calico-vxlan+wireguard",
        "calico-vxlan | ipip", "cross-subnet", "bgp",
    ]  # fmt: skip
    # every entry once, and a pair's entries are both light and may share the mesh
    flat = [e for p in order for e in p.entries]
    assert sorted(map(str, flat)) == sorted(default.modes)
    for p in order:
        if p.paired:
            assert all(matrix.unpairable(e, default, lab) is None for e in p.entries)
            assert matrix.pair_rule(*p.entries) is None
    # why the others are single: a mesh run, checks other than light ones, the first
    V = ModeSpec.parse
    assert matrix.unpairable(V("bgp"), default, lab) == "a mesh run"
    assert matrix.unpairable(V("host-gw"), default, lab) == "a mesh run"
    assert matrix.unpairable(V("host-gw+wireguard"), default, lab) is None  # no partner
    # the rule itself: mesh routing and encryption (docs/mesh.md), nothing by name
    assert matrix.pair_rule(V("vxlan"), V("bgp")) == "tunnel and native routing"
    assert matrix.pair_rule(V("vxlan"), V("udp+wireguard")) == "encryption none and wireguard"
    assert matrix.pair_rule(V("ipip+wireguard"), V("udp+wireguard")) is None
    assert matrix.pair_rule(V("bgp"), V("bgp+wireguard")) is not None
    # the order stays the cheapest: no costlier than the unpaired order's switches
    cost = sum(matrix.phase_switch_cost(a, b, 2) for a, b in itertools.pairwise(order))
    single = [matrix.Phase((e,)) for e in matrix.phases(default)]
    assert cost <= sum(matrix.phase_switch_cost(a, b, 2) for a, b in itertools.pairwise(single))


def test_wireguard_entries_pair_with_each_other_and_never_with_clear_ones() -> None:
    lab = _shape(TWO)
    modes = ["host-gw", "vxlan+wireguard", "vxlan", "udp+wireguard", "ipip+wireguard"]
    custom = matrix.preset("default", modes)
    order = matrix.lockstep_phases(custom, lab)
    assert [str(p) for p in order if p.paired] == ["vxlan+wireguard | udp+wireguard"]
    # vxlan has no clear partner; ipip+wireguard holds the encrypted heavy checks
    assert [str(p) for p in order if not p.paired] == ["host-gw", "vxlan", "ipip+wireguard"]


def test_pairs_need_two_meshed_clusters_and_light_entries() -> None:
    default, full = matrix.preset("default"), matrix.preset("full")
    single = [matrix.Phase((e,)) for e in matrix.phases(default)]
    assert list(matrix.lockstep_phases(default, _shape(SINGLE))) == single
    assert list(matrix.lockstep_phases(default, None)) == single
    three = LabShape("t", clusters=3, outside_hosts=1, max_segments_per_cluster=1, meshed=3)
    assert not any(p.paired for p in matrix.lockstep_phases(default, three))
    apart = LabShape("t", clusters=2, outside_hosts=1, max_segments_per_cluster=1, meshed=0)
    assert not any(p.paired for p in matrix.lockstep_phases(default, apart))
    # the full matrix runs every check everywhere: no entry is light, the run unchanged
    full_phases = matrix.lockstep_phases(full, _shape(TWO))
    assert [p.entries[0] for p in full_phases] == list(matrix.phases(full))
    assert not any(p.paired for p in full_phases)


def test_the_script_gets_pairs_as_cluster_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert matrix.main(["--topology", str(TWO), "--entries", "--phases"]) == 0
    assert capsys.readouterr().out.split() == [
        "host-gw", "c1=vxlan,c2=udp", "host-gw+wireguard", "calico-vxlan+wireguard",
        "c1=calico-vxlan,c2=ipip", "cross-subnet", "bgp",
    ]  # fmt: skip
    assert matrix.main(["--topology", str(TWO), "--entries", "--phases", "--mesh"]) == 0
    assert capsys.readouterr().out.split() == ["1", "0", "0", "1", "0", "0", "1"]
    # without a topology, or in a single-cluster lab, the phases are the entries
    assert matrix.main(["--entries", "--phases"]) == 0
    assert capsys.readouterr().out.split() == list(
        map(str, matrix.phases(matrix.preset("default")))
    )
    assert matrix.main(["--topology", str(SINGLE), "--entries", "--phases"]) == 0
    assert capsys.readouterr().out.split() == list(
        map(str, matrix.phases(matrix.preset("default")))
    )


def test_a_phase_token_names_each_cluster_s_entry_once() -> None:
    from harness.conformance.modes import deploy_mode, phase_entries
    from harness.errors import UserError

    V = ModeSpec.parse
    assert phase_entries("vxlan", ["c1", "c2"]) == {"c1": V("vxlan"), "c2": V("vxlan")}
    pair = phase_entries("c1=vxlan+wireguard,c2=udp+wireguard", ["c1", "c2"])
    assert pair == {"c1": V("vxlan+wireguard"), "c2": V("udp+wireguard")}
    assert deploy_mode(pair) == ("c1=vxlan,c2=udp", "wireguard")
    assert deploy_mode(phase_entries("ipip", ["c1", "c2"])) == ("ipip", "none")
    for bad, message in (
        ("c1=vxlan", "no entry for cluster c2"),
        ("c1=vxlan,c3=udp", "'c3=udp' is not CLUSTER=ENTRY"),
        ("c1=vxlan,c1=udp", "'c1=udp' is not CLUSTER=ENTRY"),
        ("c1=vxlan,c2=geneve", "unknown mode 'geneve'"),
    ):
        with pytest.raises(UserError, match=message):
            phase_entries(bad, ["c1", "c2"])
    with pytest.raises(UserError, match="one encryption"):
        deploy_mode({"c1": V("vxlan"), "c2": V("udp+wireguard")})


def test_a_pair_s_runs_each_record_their_entry_in_full_once(pytester: pytest.Pytester) -> None:
    """c1 in vxlan and c2 in udp, each --deal 1/1 --lab-decisions: every check of each entry
    recorded exactly once, by its cluster's run, the mesh's decisions included."""
    pytester.makepyfile(test_m=SUITE)
    out = pytester.path / "out"
    i1, d1 = _collect(pytester, out, "--entry=vxlan", "--scope=cluster", "--cluster=c1",
                      "--deal=1/1", "--lab-decisions")  # fmt: skip
    i2, d2 = _collect(pytester, out, "--entry=udp", "--scope=cluster", "--cluster=c2",
                      "--deal=1/1", "--lab-decisions")  # fmt: skip
    every = {"test_light", "test_heavy", "test_once", "test_strict", "test_mesh"}
    for ids, data, entry in ((i1, d1, "vxlan"), (i2, d2, "udp")):
        names = [c["name"] for c in data["checks"]]
        assert len(names) == len(set(names))  # once
        assert {c["mode"] for c in data["checks"]} == {entry}
        assert ids == {f"test_light[{entry}]"}  # runs here, all of it
        assert set(names) | {"test_light"} == every  # the rest: its decision, here
        assert "test_mesh" in names  # the whole-lab decision, recorded here
