"""The catalogue and the matrix planner: families, the cover, decisions and their reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.conformance import catalogue, matrix
from harness.conformance.catalogue import CATALOGUE, LabShape, declare
from harness.conformance.modes import AXES, ModeSpec, families
from harness.errors import UserError
from harness.plan.build import load_plan

REPO = Path(__file__).resolve().parents[2]
SINGLE = LabShape("t", clusters=1, outside_hosts=1, max_segments_per_cluster=1)


def _spec(text: str) -> ModeSpec:
    return ModeSpec.parse(text)


def test_every_mode_has_one_family_per_axis() -> None:
    assert families(_spec("host-gw")) == ("bridged", "direct", "clear")
    assert families(_spec("bgp+wireguard")) == ("routed", "direct", "encrypted")
    assert families(_spec("udp")) == ("bridged", "encapsulated", "clear")
    assert families(_spec("cross-subnet")) == ("routed", "encapsulated", "clear")
    for entry in matrix.preset("full").entries:
        for axis, fam in zip(AXES.values(), families(entry), strict=True):
            assert fam in axis


def test_the_default_cover_puts_heavy_checks_into_two_opposite_entries() -> None:
    default = matrix.preset("default")
    assert default.modes == (
        "host-gw", "vxlan", "udp", "bgp", "ipip", "calico-vxlan", "cross-subnet",
        "host-gw+wireguard", "calico-vxlan+wireguard",
    )  # fmt: skip
    cover = matrix.cover(default.entries)
    assert [str(c) for c in cover] == ["host-gw", "calico-vxlan+wireguard"]
    met = {f for c in cover for f in families(c)}
    assert met == {f for axis in AXES.values() for f in axis}


def test_every_scenario_runs_once_per_family_where_it_applies_in_the_default_matrix() -> None:
    default = matrix.preset("default")
    for number in CATALOGUE:
        test = declare(number)
        runs = matrix.selected_entries(test, default, SINGLE)
        applicable = [e for e in default.entries if test.not_applicable(e, SINGLE) is None]
        wanted = {f for e in applicable for f in families(e)}
        if test.cost == "once":
            assert len(runs) == min(1, len(applicable)), number
        else:
            assert {f for e in runs for f in families(e)} == wanted, number


def test_the_cover_asks_only_for_families_a_candidate_has() -> None:
    encrypted = [_spec("host-gw+wireguard"), _spec("vxlan+wireguard"), _spec("bgp+wireguard")]
    assert [str(c) for c in matrix.cover(encrypted)] == ["vxlan+wireguard", "bgp+wireguard"]
    assert matrix.cover([]) == ()


def test_decisions_say_why_a_check_does_not_run_here() -> None:
    default = matrix.preset("default")
    strict = declare(20)
    assert matrix.decide(strict, _spec("vxlan"), default, SINGLE) == matrix.Decision(
        "not-applicable", "vxlan: no encryption (runs in MODE+wireguard)"
    )
    assert matrix.decide(strict, _spec("host-gw+wireguard"), default, SINGLE).state == "run"
    nodeport = declare(10)
    assert matrix.decide(nodeport, _spec("host-gw"), default, SINGLE).state == "run"
    skipped = matrix.decide(nodeport, _spec("bgp"), default, SINGLE)
    assert skipped.state == "not-selected"
    assert "host-gw, calico-vxlan+wireguard" in skipped.reason and "MATRIX=full" in skipped.reason
    full = matrix.preset("full")
    assert matrix.decide(nodeport, _spec("bgp"), full, SINGLE).state == "run"
    assert matrix.decide(declare(22), _spec("cross-subnet"), full, SINGLE) == matrix.Decision(
        "not-applicable", "lab t: no cluster spans two L2 segments"
    )
    assert matrix.decide(declare(24), _spec("vxlan"), full, SINGLE).reason == (
        "lab t has no two clusters in one mesh (label podlab.mesh)"
    )


def test_a_test_may_narrow_its_scenario() -> None:
    heavy = declare(28, cost="heavy")
    assert heavy.cost == "heavy" and declare(28).cost == "light"
    outside = declare(10, needs=catalogue.outside_host)
    alone = LabShape("t", 1, 0, 1)
    assert outside.not_applicable(_spec("vxlan"), alone) == (
        "lab t has no outside host (a node with podlab.role: host)"
    )
    with pytest.raises(KeyError, match="scenario 99 is not in the catalogue"):
        declare(99)
    with pytest.raises(ValueError, match="cost 'huge'"):
        declare(1, cost="huge")  # type: ignore[arg-type]


def test_explicit_modes_keep_their_policy_and_bad_names_are_refused() -> None:
    custom = matrix.preset("default", ["bgp", "vxlan+wireguard", "bgp"])
    assert (custom.name, custom.policy, custom.modes) == (
        "custom", "default", ("bgp", "vxlan+wireguard")
    )  # fmt: skip
    assert matrix.preset("full", ["bgp"]).policy == "full"
    assert len(matrix.preset("full").entries) == 14
    with pytest.raises(UserError, match="unknown matrix"):
        matrix.preset("huge")
    with pytest.raises(UserError, match="unknown mode 'geneve'"):
        matrix.preset("default", ["geneve"])


def test_lab_shapes_come_from_the_plan() -> None:
    single = LabShape.of(load_plan(REPO / "topologies" / "single-cluster.clab.yml"))
    assert (single.clusters, single.outside_hosts, single.max_segments_per_cluster) == (1, 1, 1)
    xsub = LabShape.of(load_plan(REPO / "topologies" / "cross-subnet.clab.yml"))
    assert xsub.max_segments_per_cluster == 2 and catalogue.two_segments(xsub) is None


def test_the_start_of_a_run_prints_the_cover() -> None:
    default = matrix.preset("default")
    lines = matrix.describe(default, matrix.cover(default.entries))
    assert lines[0] == "matrix default (default selection), 9 entries:"
    assert any(ln.strip().startswith("host-gw ") and "[heavy checks]" in ln for ln in lines)
    assert any("calico-vxlan+wireguard" in ln and "routed · encapsulated · encrypted" in ln
               for ln in lines)  # fmt: skip
    assert "every mode family at least once" in lines[-1]


def test_a_split_deals_every_entry_once_and_heavy_entries_apart() -> None:
    default = matrix.preset("default")
    tests = [declare(n) for n in (1, 2, 3, 10, 13, 17, 23, 28)]
    one, two = matrix.split(default, tests, SINGLE, 2)
    assert sorted(map(str, one + two)) == sorted(default.modes)
    assert list(one) == [e for e in default.entries if e in one]  # each part in matrix order
    heavy = matrix.cover(default.entries)
    assert (heavy[0] in one) != (heavy[1] in one)
    assert _spec("host-gw") in one  # the costliest entry (heavy and once-per-run checks)
    assert len(matrix.split(default, tests, SINGLE, 1)[0]) == 9


def test_a_split_weighs_once_checks_as_the_slow_ones_they_are() -> None:
    """host-gw holds every once-per-run check (20 s each against 1.4 s for a light one):
    its part gets fewer entries, and mesh (lab-scope) checks weigh on no part."""
    default = matrix.preset("default")
    meshed = LabShape("m", clusters=2, outside_hosts=1, max_segments_per_cluster=1, meshed=2)
    light = [declare(n) for n in (1, 2, 3, 19, 28, 29, 30)] * 4
    heavy = [declare(n) for n in (5, 6, 7, 8, 10, 13, 17)] * 4
    once = [declare(n) for n in (23, 31, 32, 33, 34, 35)]
    one, two = matrix.split(default, light + heavy + once, meshed, 2)
    assert _spec("host-gw") in one and len(one) < len(two)
    mesh = [declare(n) for n in (24, 25, 26, 27)] * 10
    assert matrix.split(default, light + heavy + once + mesh, meshed, 2) == (one, two)


def test_cross_cluster_routing_meets_native_routing_and_tunnels() -> None:
    default = matrix.preset("default")
    meshed = LabShape("m", clusters=2, outside_hosts=1, max_segments_per_cluster=1, meshed=2)
    runs = matrix.selected_entries(declare(24), default, meshed)
    assert [str(e) for e in runs] == ["host-gw", "bgp", "calico-vxlan+wireguard"]
    assert {catalogue.mesh_routing(e) for e in runs} == {"native routing", "tunnel"}
    # services, failover and policy across clusters: once per family (ADR 0009's cover,
    # WireGuard included), not per routing too
    for n in (25, 26, 27):
        runs = matrix.selected_entries(declare(n), default, meshed)
        assert [str(e) for e in runs] == ["host-gw", "calico-vxlan+wireguard"], n
    assert declare(25).not_applicable(_spec("bgp"), SINGLE) == (
        "lab t has no two clusters in one mesh (label podlab.mesh)"
    )
    two = LabShape.of(load_plan(REPO / "topologies" / "two-clusters.clab.yml"))
    assert (two.clusters, two.meshed) == (2, 2)


def test_each_cluster_allocates_cluster_ips_from_its_own_service_cidr(tmp_path: Path) -> None:
    import yaml

    from harness.conformance.labctl import Lab

    topo = yaml.safe_load((REPO / "topologies" / "two-clusters.clab.yml").read_text())
    groups = topo["topology"]["groups"]
    for group in groups.values():
        group["labels"].pop("podlab.mesh", None)
    groups["c2"]["labels"]["podlab.service-cidr"] = "10.97.0.0/16"
    path = tmp_path / "t.clab.yml"
    path.write_text(yaml.safe_dump(topo))
    plan = load_plan(path)
    lab = Lab("t", tmp_path, plan, tmp_path / "inv.yml",
              endpoints={"c1": "http://127.0.0.1:1", "c2": "http://127.0.0.1:2"})  # fmt: skip
    assert str(lab.client("c2").service_cidr) == "10.97.0.0/16"
    lab.set_focus("c2")
    assert str(lab.client().service_cidr) == "10.97.0.0/16" and lab.clusters == ("c2",)
    assert lab.port(18084) == 18094
    from harness.conformance.labctl import needs_deploy

    lab.set_focus(None)  # the whole lab: a mesh run must deploy every cluster left elsewhere
    lab.deployed = {"c1": _spec("host-gw"), "c2": _spec("calico-vxlan")}
    assert needs_deploy(lab, _spec("host-gw")) == ["c2"]
    assert needs_deploy(lab, _spec("host-gw+wireguard")) == ["c1", "c2"]


def test_the_plan_says_where_the_mesh_scenarios_run(capsys: pytest.CaptureFixture[str]) -> None:
    two = str(REPO / "topologies" / "two-clusters.clab.yml")
    assert matrix.main(["--topology", two]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        "whole-lab (mesh) scenarios: 24 in host-gw, bgp, calico-vxlan+wireguard; "
        "25, 26, 27 in host-gw, calico-vxlan+wireguard"
    ) in out
    assert out[-2].startswith("  7. bgp ")  # then the lockstep phases (test_conformance_lockstep)
    one = str(REPO / "topologies" / "single-cluster.clab.yml")
    assert matrix.main(["--topology", one]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "whole-lab (mesh) scenarios 24-27: not applicable (lab single-cluster has no two "
        "clusters in one mesh (label podlab.mesh))"
    )
