"""Hand-built reference paths on the real kernel: built, carrying traffic the way they claim,
and gone without a trace afterwards (throwaway namespaces, root only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.exec import run
from harness.refpath import build, spec

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]


def _counters(netns: str, ifname: str) -> int:
    out = run(["ip", "-j", "-s", "link", "show", "dev", ifname], netns=netns).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["packets"])


def _leftovers(tag: str) -> list[str]:
    names = os.listdir("/var/run/netns") if os.path.isdir("/var/run/netns") else []
    left = [n for n in names if n.startswith(f"{build.PREFIX}{tag}-")]
    return left + ([str(build.STATE_ROOT / tag)] if (build.STATE_ROOT / tag).exists() else [])


CASES = [
    (spec.RefSpec("bridged", "none", 1500), "eth1"),
    (spec.RefSpec("routed", "none", 1500), "eth1"),
    (spec.RefSpec("bridged", "vxlan", 1450, 1500, 1, 8472), "vxref"),
    (spec.RefSpec("routed", "vxlan", 1450, 1500, 4096, 4789), "vxref"),
    (spec.mesh_tunnel_reference(), "vxref"),
    (spec.RefSpec("bridged", "none", 1500, router=True), "eth1"),
]
if shutil.which("wireguard-go") and shutil.which("wg"):
    CASES.append((spec.RefSpec("bridged", "wireguard", 1420, wireguard="wireguard-go"), "wg"))


@pytest.mark.parametrize(("ref", "carrier"), CASES, ids=[c[0].name for c in CASES])
def test_a_reference_carries_pod_traffic_over_its_own_device_and_leaves_nothing(
    ref: spec.RefSpec, carrier: str
) -> None:
    tag = build.new_tag()
    path = build.build(ref, tag, server_port=5299, lifetime_s=120, node_port=5298)
    try:
        a = path.nodes[0]
        dev = build._Builder(ref, tag).wg_iface(0) if carrier == "wg" else carrier
        before = _counters(a, dev)
        router = build.ns_name(tag, "r")
        routed_before = _counters(router, "eth2") if ref.router else 0
        pod_mtu = run(["cat", "/sys/class/net/eth0/mtu"], netns=path.client_netns).stdout
        assert int(pod_mtu) == ref.pod_mtu
        argv = [sys.executable, "-m", "harness.refpath", "rounds", "--rounds", "2",
                "--seconds", "1", "--target",
                f"hand-built={path.client_netns}@{path.server_ip}:{path.port}",
                "--target", f"node-node={a}@{path.node_ip}:{path.node_port}"]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        for name, got in json.loads(out.stdout).items():
            assert len(got) == 2 and all(r["received_bps"] > 0 for r in got), name
        # the traffic went through the device the spec names (not around it)
        assert _counters(a, dev) - before > 1000, f"{dev} in {a} carried no packets"
        if ref.router:  # and through the router, onto b's own segment
            assert _counters(router, "eth2") - routed_before > 1000
            assert not path.node_ip.startswith("10.255.0.")
        else:
            assert not Path(f"/var/run/netns/{router}").exists()
        bridges = run(["ip", "-br", "link", "show", "type", "bridge"], netns=a).stdout
        assert ("cni0" in bridges) == (ref.pods == "bridged")
        pids = (build.STATE_ROOT / tag / "pids").read_text().split()
    finally:
        build.teardown(tag)
    assert _leftovers(tag) == []
    for pid in pids:  # the iperf3 server (and wireguard-go) are gone
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_a_build_that_fails_half_way_removes_what_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # wireguard-go missing from PATH: namespaces, underlay, pods and keys exist by the
    # time its start fails
    for tool in ("ip", "wg", "sysctl", "ping", "timeout", "rm"):
        found = shutil.which(tool)
        if found:
            (tmp_path / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(tmp_path))
    tag = build.new_tag()
    with pytest.raises(RuntimeError, match="did not come up"):
        build.build(spec.RefSpec("routed", "wireguard", 1440, wireguard="wireguard-go"), tag)
    assert _leftovers(tag) == []


def test_a_tag_in_use_is_refused_and_its_reference_left_alone() -> None:
    tag = build.new_tag()
    build.build(spec.RefSpec("bridged", "none", 1500), tag)
    try:
        with pytest.raises(RuntimeError, match="in use"):
            build.build(spec.RefSpec("routed", "none", 1500), tag)
        assert len(_leftovers(tag)) == 6  # five namespaces and the state directory
    finally:
        build.teardown(tag)
    assert _leftovers(tag) == []


def test_the_cli_refuses_a_bad_spec_with_one_line() -> None:
    res = subprocess.run([sys.executable, "-m", "harness.refpath", "up", "--spec",
                          '{"pods": "bridged", "encap": "gre", "pod_mtu": 1500}'],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "encap must be one of" in res.stderr
