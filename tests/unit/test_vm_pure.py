"""The vm backend's pure parts: KVM detection, guest sizes, the memory check, the
image key, the identity document and the qemu command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.deploy import wheel
from harness.errors import UserError
from harness.lab import vm, vmspec
from harness.lab.image import build, recipe
from harness.lab.state import LabPaths
from harness.plan.build import load_plan

REPO = Path(__file__).resolve().parents[2]
VM_LAB = REPO / "topologies" / "vm-lab.clab.yml"


def test_kvm_needs_hardware_virtualisation_not_just_a_device(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    cpu = tmp_path / "cpuinfo"
    assert vmspec.kvm_status(dev, cpu) == "no /dev/kvm"
    dev.write_text("")
    cpu.write_text("processor : 0\nflags : fpu sse2 lm\n")
    assert "stock guest kernel cannot use it" in str(vmspec.kvm_status(dev, cpu))
    cpu.write_text("processor : 0\nflags : fpu svm lm\n")
    assert vmspec.kvm_status(dev, cpu) is None  # control: an AMD host with SVM


def test_guest_sizes_come_from_labels_with_defaults(tmp_path: Path) -> None:
    data = yaml.safe_load(VM_LAB.read_text())
    nodes = data["topology"]["nodes"]
    nodes["c1-cp"]["labels"].pop("podlab.vm-memory")
    nodes["c1-w1"]["labels"]["podlab.vm-memory"] = "320"
    topo = tmp_path / "vm-lab.clab.yml"
    topo.write_text(yaml.safe_dump(data))
    specs = vmspec.specs(load_plan(str(topo)))
    # c1-cp has no label: the control-plane default; c1-w1's label says 320
    assert [s.memory_mb for s in specs.values()] == [vmspec.CONTROL_PLANE_MEMORY_MB, 320]
    assert vmspec.CONTROL_PLANE_MEMORY_MB > vmspec.DEFAULT_MEMORY_MB
    assert [s.index for s in specs.values()] == [0, 1]
    assert all(s.cpus == vmspec.DEFAULT_CPUS for s in specs.values())


def test_memory_check_refuses_what_does_not_fit() -> None:
    plan = load_plan(str(VM_LAB))
    specs = vmspec.specs(plan)
    tcg = vmspec.Accel("tcg", "test")
    need = sum(vmspec.guest_host_mb(s, tcg) for s in specs.values())
    vmspec.check_memory(plan, specs, tcg, need + vmspec.HOST_RESERVE_MB)  # fits exactly
    with pytest.raises(UserError, match=f"2 guests need {need} MiB"):
        vmspec.check_memory(plan, specs, tcg, need + vmspec.HOST_RESERVE_MB - 1)


def test_image_key_follows_the_recipe() -> None:
    base = recipe.key()
    assert recipe.key() == base and len(base) == 16
    assert recipe.key((*recipe.PACKAGES, "htop")) != base
    assert recipe.key(recipe.PACKAGES, "trixie") != base


def test_mirror_is_the_one_apt_uses() -> None:
    deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
    security = "URIs: http://mirror.example/debian-security\n"
    assert recipe.mirror_in(security + deb822) == "http://mirror.example/debian"
    assert recipe.mirror_in("deb http://m.example/debian bookworm main\n") == (
        "http://m.example/debian"
    )
    assert recipe.mirror_in("URIs: https://deb.nodesource.com/node_20.x\n") is None


def test_identity_document_and_qemu_command_line(tmp_path: Path) -> None:
    plan = load_plan(str(VM_LAB))
    node = plan.nodes["c1-w1"]
    doc = vm.identity(plan, node, "ssh-ed25519 AAAA lab", "PRIVATE", "ssh-ed25519 HOST")
    assert doc["hostname"] == "c1-w1"
    assert [i["name"] for i in doc["interfaces"]] == ["eth0", "eth1"]
    assert doc["interfaces"][1]["address"] == str(node.underlay.address)  # type: ignore[union-attr]
    assert doc["sysctls"]["net.ipv4.ip_forward"] == 0
    spec = vmspec.specs(plan)["c1-w1"]
    image = build.Image("k", tmp_path / "img")
    paths = LabPaths(tmp_path / "lab")
    tcg = vm.qemu_argv(plan, paths, spec, vmspec.Accel("tcg", "t"), image)
    assert "tcg,thread=single,tb-size=64" in tcg and "-daemonize" in tcg
    assert f"name=opt/podlab/identity,file={paths.node_dir('c1-w1') / 'identity.json'}" in tcg
    taps = [a for a in tcg if a.startswith("tap,")]
    assert [t.split("ifname=")[1].split(",")[0] for t in taps] == ["t1n0", "t1n1"]
    kvm = vm.qemu_argv(plan, paths, spec, vmspec.Accel("kvm", "t"), image)
    assert "kvm" in kvm and not any("tcg" in a for a in kvm)
    assert vm.mac(spec, 1) == "52:54:00:00:01:01"
    fast, slow = vmspec.Accel("kvm", "t"), vmspec.Accel("tcg", "t")
    assert vm.boot_cpu_budget(slow) > vm.boot_cpu_budget(fast)
    assert vm.cpu_seconds(1) >= 0.0 and vm.cpu_seconds(2**22 + 1) == 0.0


def test_a_netns_placeholder_is_not_taken_for_a_namespace(tmp_path: Path) -> None:
    from harness.cni.nsutil import is_netns as _is_netns

    placeholder = tmp_path / "pod-default-x"
    placeholder.write_text("")  # what a killed pyroute2 helper leaves behind
    assert not _is_netns(str(placeholder))
    assert not _is_netns(str(tmp_path / "missing"))
    assert _is_netns("/proc/self/ns/net")  # control: a real namespace file


def test_image_key_follows_the_baked_venv() -> None:
    pins = recipe.venv_pins()
    assert any(p.startswith("pydantic-core==") for p in pins), "the closure, not just the top"
    assert any(p.startswith("pip==") for p in pins)
    base = recipe.key(venv=pins)
    assert recipe.key() == base
    bumped = tuple(p + ".1" if p.startswith("pyyaml==") else p for p in pins)
    assert recipe.key(venv=bumped) != base


def test_the_agent_role_looks_where_the_image_bakes() -> None:
    """The role's venv, pip directory and marker name are the image's (one change, both)."""
    defaults = yaml.safe_load((REPO / "playbooks/roles/agent/defaults/main.yml").read_text())
    assert defaults["agent_venv"] == recipe.VENV
    assert defaults["agent_pip_dir"] == recipe.PIP_DIR
    tasks = (REPO / "playbooks/roles/agent/tasks/main.yml").read_text()
    assert f"REQS_MARKER: {wheel.REQUIREMENTS_MARKER}\n" in tasks
