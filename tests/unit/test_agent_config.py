"""agent.yaml parsing: the contract with the deploy role."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.agent.config import ConfigError, load

EXAMPLE = """\
node: c1-w1
cluster: c1
cluster_id: 1
etcd_endpoints: ["http://10.100.0.2:2379"]
pod_cidr: 10.244.0.0/16
node_prefix: 24
service_cidr: 10.96.0.0/16
mode: vxlan
encryption: none
proxy_mode: nftables
underlay_interface: eth1
underlay_address: 10.100.0.3
underlay_mtu: 1500
segment: fabric
route_reflector: false
state_dir: /var/lib/podlab
run_dir: /run/podlab
log_dir: /var/log/podlab
"""


def test_the_documented_example_loads(tmp_path: Path) -> None:
    p = tmp_path / "agent.yaml"
    p.write_text(EXAMPLE)
    cfg = load(p)
    assert (cfg.node, cfg.mode, str(cfg.pod_cidr), cfg.node_prefix) == (
        "c1-w1",
        "vxlan",
        "10.244.0.0/16",
        24,
    )
    assert str(cfg.netns_dir) == "/run/netns" and not cfg.allow_root_netns


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"mode": "carrier-pigeon"}, "mode"),
        ({"node_prefix": 16}, "node_prefix /16 must be longer than pod_cidr"),
        ({"pod_cidr": "10.244.0.1/16"}, "pod_cidr"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"etcd_endpoints": []}, "etcd_endpoints"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, change: dict, expected: str) -> None:
    data = yaml.safe_load(EXAMPLE) | change
    p = tmp_path / "agent.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load(p)
    assert expected in str(err.value) and str(p) in str(err.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.yaml")
