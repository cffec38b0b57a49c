"""``podlab hollow``'s checks before anything runs: cluster lookup and the size's fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import UserError
from harness.hollow.cli import _count, check_fit, cluster_of

INV = {
    "all": {
        "children": {
            "c1": {
                "vars": {
                    "podlab_cluster": "c1",
                    "podlab_pod_cidr": "10.244.0.0/22",
                    "podlab_node_prefix": 24,
                    "podlab_mode": "vxlan",
                },
                "hosts": {"c1-cp": {}, "c1-w1": {}},
            },
            "control_plane": {"hosts": {"c1-cp": {}}},
        }
    }
}


def test_cluster_and_fit(tmp_path: Path) -> None:
    inv = tmp_path / "lab.yml"
    inv.write_text(yaml.safe_dump(INV))
    cvars, hosts, cp = cluster_of(inv, "c1")
    assert cp == "c1-cp" and hosts == ["c1-cp", "c1-w1"]
    check_fit(cvars, len(hosts), 1, "c1")  # 4 subnets: the first never leased, 2 real
    with pytest.raises(UserError, match=r"leaves 1 /24 subnets beside its 2 real nodes"):
        check_fit(cvars, len(hosts), 2, "c1")
    check_fit({**cvars, "podlab_mode": "bgp"}, 2, 0, "c1")  # 0 always allowed (removal)
    with pytest.raises(UserError, match="hollow nodes support vxlan, host-gw"):
        check_fit({**cvars, "podlab_mode": "bgp"}, 2, 1, "c1")
    with pytest.raises(UserError, match=r"no cluster 'c9' \(fix: use one of c1\)"):
        cluster_of(inv, "c9")


def test_count_argument() -> None:
    assert _count("0") == 0 and _count("12") == 12
    for bad in ("-1", "ten", "1.5"):
        with pytest.raises(Exception, match="is not a count"):
            _count(bad)
