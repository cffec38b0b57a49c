"""``podlab mesh join``'s checks, before anything is changed: every refusal one line
naming the object and the fix, and a good pair of labs accepted."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from harness.api import meshjoin
from harness.api.meshjoin import Member, Record, Side
from harness.cli import main
from harness.lab import joinlink
from harness.lab.state import LabPaths

INFO = {
    "name": "c1",
    "id": 1,
    "mesh": "m",
    "podCIDR": "10.244.0.0/16",
    "mode": "vxlan",
    "routing": "tunnel",
    "encryption": "none",
    "caFingerprint": "sha256:aa",
    "exportEndpoint": "https://10.100.1.2:32379",
}


def member(lab: str, name: str, info: dict[str, Any] | None = None, **kw: Any) -> Member:
    data = None if info is None else {**info, "name": name, **kw}
    return Member(lab, name, str(kw.get("mesh", "m")), f"{name}-cp", "http://x:2379", data)


def side(tmp: Path, lab: str, *members: Member, backend: str = "netns") -> Side:
    return Side(lab, LabPaths(tmp / lab), backend, {m.name: m for m in members}, {}, [])


def good(tmp: Path) -> tuple[Side, Side]:
    a = side(tmp, "la", member("la", "c1", INFO), member("la", "c2", INFO, id=2,
             podCIDR="10.245.0.0/16"))  # fmt: skip
    b = side(tmp, "lb", member("lb", "c3", INFO, id=3, podCIDR="10.246.0.0/16"))
    return a, b


def test_a_good_pair_has_no_problem(tmp_path: Path) -> None:
    a, b = good(tmp_path)
    assert meshjoin.problems(a, b) == []
    assert [(x.name, y.name) for x, y in meshjoin.pairs(a, b)] == [("c1", "c3"), ("c2", "c3")]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"podCIDR": "10.244.128.0/17"}, ["pod CIDR 10.244.128.0/17 overlaps", "fix:"]),
        ({"id": 2}, ["cluster id 2, already used by cluster c2", "podlab.cluster-id"]),
        ({"caFingerprint": "sha256:bb"}, ["another mesh CA", "--mesh-ca", "la/mesh/m"]),
        ({"routing": "native", "mode": "bgp"}, ["native routing", "bgp in every cluster"]),
        ({"encryption": "wireguard"}, ["encryption wireguard", "one podlab.encryption"]),
    ],
)
def test_each_broken_rule_is_one_line_with_its_fix(
    tmp_path: Path, change: dict[str, Any], words: list[str]
) -> None:
    a, _ = good(tmp_path)
    b = side(tmp_path, "lb", member("lb", "c3", INFO, **{"id": 3, "podCIDR": "10.246.0.0/16",
             **change}))  # fmt: skip
    lines = meshjoin.problems(a, b)
    assert len(lines) == 1, lines
    assert all(w in lines[0] for w in words), lines[0]
    assert "c3" in lines[0]  # names the object


def test_duplicate_name_self_join_no_info_no_mesh_and_backends(tmp_path: Path) -> None:
    a, _ = good(tmp_path)
    dup = side(tmp_path, "lb", member("lb", "c1", INFO, id=9, podCIDR="10.247.0.0/16"))
    assert "cluster name c1 is already used" in meshjoin.problems(a, dup)[0]
    assert "cannot join itself" in meshjoin.problems(a, a)[0]
    fresh = side(tmp_path, "lb", member("lb", "c3", None))
    assert "publishes no clusterinfo" in meshjoin.problems(a, fresh)[0]
    other = side(tmp_path, "lb", member("lb", "c3", INFO, id=3, podCIDR="10.246.0.0/16",
                 mesh="other"))  # fmt: skip
    assert "share no mesh" in meshjoin.problems(a, other)[0]
    vm = side(tmp_path, "lb", member("lb", "c3", INFO, id=3, podCIDR="10.246.0.0/16"),
              backend="vm")  # fmt: skip
    assert "join labs of one backend" in meshjoin.problems(a, vm)[0]


def test_record_round_trips_and_link_space_avoids_taken_subnets(tmp_path: Path) -> None:
    a, _ = good(tmp_path)
    rec = Record("la", "lb", link={"netns": "n", "ifname": "pjabc", "subnet": "100.64.0.0/30"})
    rec.routes["podlab-la-c1-cp"] = ["10.200.1.0/24"]
    rec.save(a)
    assert Record.load(a, "lb") == rec
    assert Record.load(a, "nobody") is None
    taken = [ipaddress.IPv4Network("100.64.0.0/29"), ipaddress.IPv4Network("10.0.0.0/8")]
    assert joinlink.free_subnet(taken) == ipaddress.IPv4Network("100.64.0.8/30")
    assert len(joinlink.link_name("a-very-long-lab-name-indeed")) <= 15


def test_cli_refuses_unknown_labs_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PODLAB_HOME", str(tmp_path))
    assert main(["mesh", "join", "no-such-lab", "other"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no-such-lab" in err and "fix:" in err
    assert main(["mesh", "leave", "no-such-lab", "other"]) == 2
