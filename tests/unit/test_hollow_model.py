"""Hollow-node records and settings (pure): the shapes real agents read, the refusals."""

from __future__ import annotations

import ipaddress

import pytest

from harness.hollow.model import (
    HollowConfig,
    HollowError,
    HollowNode,
    node_record,
    pod_status,
    subnet_record,
)


def cfg(**kw: object) -> HollowConfig:
    base: dict = {"cluster": "c1", "etcd_endpoints": ["http://e:2379"], "nodes": 3}
    return HollowConfig(**{**base, "underlay_ip": "10.0.0.9", **kw})


def test_records_carry_what_a_vxlan_peer_needs() -> None:
    c = cfg()
    n = HollowNode("hollow-000", subnet=ipaddress.IPv4Network("10.244.5.0/24"))
    sub = subnet_record(c, n.name, n.subnet)  # type: ignore[arg-type]
    assert sub["underlayIP"] == "10.0.0.9" and sub["hollow"] is True
    assert sub["backend"]["VNI"] == 1 and sub["backend"]["Port"] == 8472
    mac = sub["backend"]["VtepMAC"]
    assert int(mac.split(":")[0], 16) & 0x02 and not int(mac.split(":")[0], 16) & 0x01
    other = subnet_record(c, "hollow-001", n.subnet)  # type: ignore[arg-type]
    assert other["backend"]["VtepMAC"] != mac, "one VTEP MAC per hollow node"
    rec = node_record(c, n)
    assert rec["podCIDR"] == "10.244.5.0/24" and rec["backend"] == sub["backend"]
    assert rec["creationTimestamp"] == n.created == node_record(c, n)["creationTimestamp"]
    assert subnet_record(cfg(mode="host-gw"), n.name, n.subnet)["backend"] == {}  # type: ignore[arg-type]


def test_heartbeat_is_the_agents_period() -> None:
    assert cfg(lease_ttl_s=60).heartbeat_s == 15 and cfg(lease_ttl_s=2).heartbeat_s == 1


def test_pod_ips_skip_the_gateway_and_are_reused_after_release() -> None:
    n = HollowNode("h", subnet=ipaddress.IPv4Network("10.244.5.0/30"))
    n.pod_ips[("d", "a")] = n.next_ip()
    assert n.pod_ips[("d", "a")] == "10.244.5.2"
    with pytest.raises(HollowError, match="no free pod address"):
        n.next_ip()
    n.pod_ips.clear()
    assert n.next_ip() == "10.244.5.2"


def test_ready_only_when_running() -> None:
    ready = lambda st: {c["type"]: c["status"] for c in st["conditions"]}["Ready"]  # noqa: E731
    assert ready(pod_status("u", "Pending", "10.244.5.2", "10.0.0.9", "t")) == "False"
    assert ready(pod_status("u", "Running", "10.244.5.2", "10.0.0.9", "t")) == "True"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"nodes": 256}, "10.244.0.0/16 has only 255 /24 subnets"),
        ({"nodes": -1}, "must be 0 or more"),
        ({"mode": "bgp"}, "hollow nodes support vxlan, host-gw"),
    ],
)
def test_refusals_name_the_limit(kw: dict, message: str) -> None:
    with pytest.raises(HollowError, match=message):
        cfg(**kw).check()
    cfg(nodes=255).check()  # the largest that fits
