"""The vm backend's refusals: one clear line, a non-zero exit, nothing half-built.

Nothing here boots a guest: not enough memory, KVM asked for where it cannot
run, a node kind that cannot be a VM, a bad guest size, and an image build
that fails halfway (a package Debian does not have, in a throwaway cache).
After each, the lab is unknown to ``status``, and no namespace, host link,
lab directory, build directory or qemu of it exists.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.lab import sysns, vmspec
from harness.plan import naming
from harness.testlab.deploylab import REPO, podlab

# Not marked `vm`: nothing here boots a guest, so these stay in `make test`.
pytestmark = [pytest.mark.integration]

LAB = "t-vm-bad"


def topology(tmp_path: Path, **labels: str) -> Path:
    data: dict[str, Any] = {
        "name": LAB,
        "mgmt": {"ipv4-subnet": "172.31.247.0/24"},
        "topology": {
            "defaults": {"kind": "linux", "labels": dict(labels)},
            "groups": {"c1": {"labels": {"podlab.cluster": "c1", "podlab.mode": "ipip"}}},
            "nodes": {
                "c1-cp": {"group": "c1", "labels": {"podlab.role": "control-plane"}},
                "c1-w1": {"group": "c1"},
                "fabric": {"kind": "bridge"},
            },
            "links": [
                {"endpoints": ["c1-cp:eth1", "fabric:p1"]},
                {"endpoints": ["c1-w1:eth1", "fabric:p2"]},
            ],
        },
    }
    path = tmp_path / f"{LAB}.clab.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assert_nothing_left() -> None:
    status = json.loads(podlab("status", "--format", "json").stdout)
    assert LAB not in {lab["lab"] for lab in status["labs"]}
    assert not sysns.netns_path(naming.vm_netns(LAB)).exists()
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert naming.mgmt_bridge(LAB) not in links
    assert not (REPO / ".podlab" / LAB).exists()


def refused(*args: str) -> str:
    res = podlab(*args)
    assert res.returncode == 2, f"exit {res.returncode}:\n{res.stdout}\n{res.stderr}"
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_not_enough_memory_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    line = refused(
        "up", str(topology(tmp_path, **{"podlab.vm-memory": "60000"})), "--backend", "vm"
    )
    assert "guests need" in line and "MiB" in line and "podlab.vm-memory" in line, line
    assert_nothing_left()


def test_a_bad_guest_size_names_the_node_and_label(tmp_path: Path) -> None:
    path = topology(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["topology"]["nodes"]["c1-cp"]["labels"]["podlab.vm-cpus"] = "lots"
    path.write_text(yaml.safe_dump(data))
    line = refused("up", str(path), "--backend", "vm")
    assert "topology.nodes.c1-cp.labels.podlab.vm-cpus" in line and "'lots'" in line, line
    assert_nothing_left()


def test_kvm_asked_for_where_it_cannot_run_is_refused(tmp_path: Path) -> None:
    why = vmspec.kvm_status()
    if why is None:
        pytest.skip("KVM works on this machine: nothing to refuse")
    line = refused("up", str(topology(tmp_path, **{"podlab.vm-accel": "kvm"})), "--backend", "vm")
    assert "kvm asked for" in line and why in line, line
    assert_nothing_left()


def test_a_node_kind_that_cannot_be_a_vm_is_refused(tmp_path: Path) -> None:
    path = topology(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["topology"]["nodes"]["c1-w1"]["kind"] = "ceos"
    path.write_text(yaml.safe_dump(data))
    line = refused("up", str(path), "--backend", "vm")
    assert "kind 'ceos'" in line and "c1-w1" in line, line
    assert_nothing_left()


def test_an_image_build_failing_halfway_leaves_no_build_behind(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "PODLAB_IMAGE_CACHE": str(cache)}
    res = subprocess.run(
        [*podlab_argv(), "image", "build", "--extra-package", "podlab-no-such-package"],
        capture_output=True, text=True, timeout=900, env=env, check=False,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "podlab-no-such-package" in lines[0], res.stderr
    assert not list(cache.glob(".build-*")), "a half-built image directory was left"
    assert not [p for p in cache.iterdir() if not p.name.startswith((".lock-", "debs"))]
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(cache) not in mounts, "a mount of the failed build is still there"


def podlab_argv() -> list[str]:
    from harness.testlab.deploylab import PODLAB

    return list(PODLAB)


def test_ipvs_proxy_on_a_netns_lab_is_refused_with_the_reason(tmp_path: Path) -> None:
    from harness.lab import preflight

    check = preflight.ipvs_available()
    if check.ok:
        pytest.skip("this host kernel has IPVS: a netns lab may use proxy mode ipvs")
    path = topology(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["topology"]["groups"]["c1"]["labels"]["podlab.proxy-mode"] = "ipvs"
    path.write_text(yaml.safe_dump(data))
    line = refused("up", str(path))  # the netns backend
    assert "needs kernel IPVS" in line and "--backend vm" in line, line
    assert_nothing_left()
