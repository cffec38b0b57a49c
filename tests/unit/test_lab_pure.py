"""Pure parts of the lab area: ledger, status, graph, ssh backend, CLI parsing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.cli import build_parser
from harness.errors import LabError, UserError
from harness.lab import graph, netns, preflight, snapshot, ssh, sshd, state, status, synth
from harness.lab.backend import BACKEND_NAMES, UpRequest, backends
from harness.lab.cli import _command
from harness.lab.containerlab import ContainerlabBackend
from harness.lab.state import LabPaths, Ledger, NodeState


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PODLAB_HOME", str(tmp_path / "labs"))
    monkeypatch.setattr(state, "REGISTRY", tmp_path / "registry")
    return tmp_path


def ledger(lab: str = "t-lab-u", pid: int | None = None, start: int | None = None) -> Ledger:
    led = Ledger(lab, "x.clab.yml", "d1", "up", "plm-x", "172.31.208.0/24")
    led.nodes["n1"] = NodeState("podlab-t-lab-u-n1", "172.31.208.2/24", "plxm0", "worker", "c1")
    led.nodes["n1"].pid, led.nodes["n1"].start = pid, start
    return led


def test_ledger_of_a_newer_podlab_still_loads(home: Path) -> None:
    """Unknown keys (a newer version's, e.g. another backend's) are left out, not fatal."""
    paths = LabPaths.of("t-lab-u")
    paths.root.mkdir(parents=True)
    written = ledger(pid=7, start=9)
    written.save(paths)
    raw = json.loads(paths.state.read_text())
    raw["future_field"] = 1
    raw["nodes"]["n1"]["future_node_field"] = "x"
    paths.state.write_text(json.dumps(raw))
    assert Ledger.load(paths) == written


def test_ledger_round_trip_and_registry(home: Path) -> None:
    paths = LabPaths.of("t-lab-u")
    paths.root.mkdir(parents=True)
    paths.marker.write_text("x")
    led = ledger()
    led.bridge_netns["podlab-t-lab-u-br"] = 42
    led.save(paths)
    again = Ledger.load(paths)
    assert again == led
    assert again.netns_names == ["podlab-t-lab-u-n1", "podlab-t-lab-u-br"]
    state.register("t-lab-u", paths)
    assert state.registered("t-lab-u") == paths
    assert list(state.known_labs()) == ["t-lab-u"]
    state.unregister("t-lab-u", LabPaths(Path("/elsewhere")))  # not its entry: kept
    assert state.registered("t-lab-u") == paths
    state.unregister("t-lab-u", paths)
    assert state.registered("t-lab-u") is None


def test_missing_and_corrupt_ledger_are_user_errors(home: Path) -> None:
    paths = LabPaths.of("t-lab-none")
    with pytest.raises(UserError, match="no lab state"):
        Ledger.load(paths)
    paths.root.mkdir(parents=True)
    paths.state.write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        Ledger.load(paths)


def test_status_of_a_lab_whose_processes_are_gone_is_stale(home: Path) -> None:
    led = ledger(pid=os.getpid(), start=1)  # our pid, but a start time that is not ours
    assert status.node_state(led.nodes["n1"]) == "down"
    assert status.lab_state(led) == "stale"
    paths = LabPaths.of(led.lab)
    paths.root.mkdir(parents=True)
    paths.marker.write_text("x")
    led.save(paths)
    data = status.lab_status()
    assert data["version"] == 1
    (lab,) = data["labs"]
    assert set(lab) == {
        "lab", "state", "backend", "source", "digest", "lab_dir", "mgmt_subnet", "mgmt_bridge",
        "nodes", "image",
    }  # fmt: skip
    assert lab["backend"] == "netns" and lab["nodes"][0]["accel"] is None
    assert lab["nodes"][0]["mgmt"] == "172.31.208.2" and lab["nodes"][0]["state"] == "down"
    assert status.find_node("n1").lab == "t-lab-u"
    with pytest.raises(UserError, match="no node n9"):
        status.find_node("n9")


def test_sshd_config_and_client_files(home: Path) -> None:
    paths = LabPaths(home / "lab")
    paths.root.mkdir()
    Path(f"{paths.host_key}.pub").write_text("ssh-ed25519 AAAAkey podlab-x\n")
    cfg = sshd.sshd_config(paths, "172.31.208.2")
    assert "ListenAddress 172.31.208.2" in cfg and "UsePAM no" in cfg
    assert f"AuthorizedKeysFile {paths.authorized_keys}" in cfg
    assert "PermitRootLogin prohibit-password" in cfg and "/etc/ssh" not in cfg
    sshd.write_client_files(paths, {"n1": "172.31.208.2", "n2": "172.31.208.3"})
    assert paths.known_hosts.read_text().splitlines() == [
        "n1,172.31.208.2 ssh-ed25519 AAAAkey",
        "n2,172.31.208.3 ssh-ed25519 AAAAkey",
    ]
    text = paths.ssh_config.read_text()
    assert "Host n1\n  HostName 172.31.208.2" in text
    assert f"UserKnownHostsFile {paths.known_hosts}" in text and "StrictHostKeyChecking yes" in text


def test_mermaid_graph_of_routed_plan() -> None:
    text = graph.mermaid(synth.routed_plan("t-lab-g", "172.31.208.0/24"))
    assert text.startswith("flowchart LR\n")
    assert 'subgraph n_cluster_c1["cluster c1: vxlan' in text
    assert 'n_lan1(("lan1<br/>192.168.11.0/24"))' in text
    assert "n_router -- eth2 --- n_lan2" in text
    assert 'n_c1_cp -- "eth2 10.255.0.0/30 eth2" --- n_c2_cp' in text
    assert text.count("subgraph") == 2 and text.count("  end") == 2


def test_inventory_hosts_merge_vars_like_ansible() -> None:
    data = {
        "all": {
            "vars": {"ansible_user": "root", "x": 1},
            "children": {
                "c1": {"vars": {"x": 2}, "hosts": {"a": {"ansible_host": "10.0.0.1"}}},
                "workers": {"hosts": {"a": None, "b": {"x": 3}}},
            },
        }
    }
    hosts = ssh.inventory_hosts(data)
    assert hosts["a"] == {"ansible_user": "root", "x": 1, "ansible_host": "10.0.0.1"}
    assert hosts["b"] == {"ansible_user": "root", "x": 3}
    argv = ssh.ssh_argv("a", {**hosts["a"], "ansible_ssh_common_args": "-F /l/ssh_config"}, "id")
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
    assert argv[5:7] == ["-F", "/l/ssh_config"] and argv[-2:] == ["10.0.0.1", "id"]


def test_cli_registers_verbs_and_command_parsing() -> None:
    parser = build_parser()
    args = parser.parse_args(["exec", "c1-w1", "--lab", "L", "--", "ip", "-br", "a"])
    assert _command(args) == ["ip", "-br", "a"] and args.lab == "L"
    args = parser.parse_args(["exec", "--lab", "M", "c1-w1", "--", "hostname"])
    assert _command(args) == ["hostname"] and args.lab == "M"
    for argv in (["up", "x"], ["down"], ["status"], ["ssh", "n1"], ["cleanup"], ["preflight"]):
        assert callable(parser.parse_args(argv).func)
    args = parser.parse_args(["graph", "L", "-o", "g.mmd"])
    assert args.output == Path("g.mmd") and args.lab == "L"


def test_backend_registry_and_containerlab_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(backends()) == set(BACKEND_NAMES)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LabError, match="`containerlab` binary is not installed"):
        ContainerlabBackend().up(UpRequest(file=Path("x.clab.yml")))
    with pytest.raises(UserError, match="needs --inventory"):
        backends()["ssh"]().up(UpRequest())
    with pytest.raises(UserError, match="needs a topology"):
        netns.NetnsBackend().up(UpRequest())


def test_preflight_features_derive_fallbacks() -> None:
    report = preflight.PreflightReport(
        [
            preflight.Check("wireguard", "kernel", False),
            preflight.Check("wireguard-go", "tool", True),
            preflight.Check("tun", "kernel", True),
            preflight.Check("ipip", "kernel", False),
        ]
    )
    feats = report.features()
    assert feats["wireguard_impl"] == "wireguard-go" and feats["ipip_impl"] == "userspace"
    report.checks[1] = preflight.Check("wireguard-go", "tool", False)
    assert report.features()["wireguard_impl"] == "none"
    assert json.loads(json.dumps(report.as_dict()))["features"]["wireguard"] is False


def test_snapshot_leak_attribution_by_name_cgroup_and_pid() -> None:
    before = snapshot.Snapshot(frozenset(), frozenset(), frozenset(), frozenset())
    after = snapshot.Snapshot(
        frozenset({"podlab-t-lab-s-n1", "podlab-other-n1"}),
        frozenset({"eth9 ", f"pl{snapshot.naming.lab_tag('t-lab-s')}m0 "}),
        frozenset({"/run/netns/podlab-t-lab-s-n1 nsfs nsfs", "/run/netns/x nsfs nsfs"}),
        frozenset(
            {
                "10:5:1:2:/podlab/t-lab-s/n1:sleep 9",
                "11:6:1:2:/:podlab-init t-lab-s/n1 infinity",
                "12:7:1:2:/:sleep 1",
                "13:8:1:2:/:",
            }
        ),
    )
    leak = snapshot.leaked(before, after, "t-lab-s", Path("/tmp/x"), set(), {(13, 8)})
    assert leak["netns"] == ["podlab-t-lab-s-n1"]
    assert len(leak["links"]) == 1 and leak["mounts"] == ["/run/netns/podlab-t-lab-s-n1 nsfs nsfs"]
    assert sorted(p.split(":")[0] for p in leak["processes"]) == ["10", "11", "13"]


def test_cli_errors_are_one_line_and_exit_2(home: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.cli import main

    assert main(["down", "t-lab-nope"]) == 2
    err = capsys.readouterr().err
    assert "no lab named t-lab-nope" in err and "Traceback" not in err
    assert main(["up", str(home / "missing.clab.yml"), "--backend", "ssh"]) == 2
    assert "--backend ssh needs --inventory FILE" in capsys.readouterr().err


def test_lab_lock_is_exclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "LOCKS", tmp_path / "locks")
    with state.lab_lock("t-lab-l"):
        with pytest.raises(LabError, match="t-lab-l is busy"), state.lab_lock("t-lab-l", wait=0):
            pass
        with state.lab_lock("t-lab-other", wait=0):
            pass
    with state.lab_lock("t-lab-l", wait=0):
        pass
