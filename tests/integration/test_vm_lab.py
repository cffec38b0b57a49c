"""A real VM lab: two qemu guests, the systemd deploy, kernel IPIP, IPVS, kernel WireGuard.

One module-scoped lab (``t-vm-it``: a control-plane and a worker guest on one
bridge, Calico-style ``ipip``, proxy ``ipvs``) carries every test, in order:
the guests boot with their identity; ``podlab deploy`` installs etcd and the
agent as systemd units; pods on the two guests reach each other through the
kernel's ``tunl0`` (its counters move; the canary is visible on the underlay:
the control of the WireGuard check below); an IPVS ClusterIP answers from
both backends, one without endpoints refuses; a mode switch to WireGuard moves
pod traffic onto a kernel ``wireguard`` device and the canary disappears from
the underlay; ``down`` leaves no qemu, tap, namespace, veth or overlay. The
cached guest image is built first if this machine has none (about 2 min).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.api.objects import KINDS
from harness.conformance import labctl, pods, remote
from harness.conformance import services as svc
from harness.conformance.labctl import ModeSpec
from harness.deploy.deploy import deploy, request_for
from harness.deploy.runner import DeployEvent, changed_tasks
from harness.lab import sysns
from harness.lab.state import Ledger, find
from harness.plan import naming
from harness.probes import echo
from harness.testlab.deploylab import REPO, podlab

pytestmark = [pytest.mark.integration, pytest.mark.vm]

LAB = "t-vm-it"
SUITE = {"app.podlab.io/suite": "conformance"}  # every pod the PodFactory makes
TOPOLOGY: dict[str, Any] = {
    "name": LAB,
    "mgmt": {"ipv4-subnet": "172.31.246.0/24"},
    "topology": {
        "defaults": {"kind": "linux"},
        "groups": {
            "c1": {
                "labels": {
                    "podlab.cluster": "c1",
                    "podlab.pod-cidr": "10.244.0.0/16",
                    "podlab.service-cidr": "10.96.0.0/16",
                    "podlab.mode": "ipip",
                    "podlab.proxy-mode": "ipvs",
                }
            }
        },
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


@dataclass
class VmLab:
    lab: labctl.Lab
    nodes: dict[str, remote.Node]
    factory: pods.PodFactory | None = None
    pods: list[pods.Pod] | None = None


@pytest.fixture(scope="module")
def vmlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmLab]:
    topo = tmp_path_factory.mktemp("vm") / f"{LAB}.clab.yml"
    topo.write_text(yaml.safe_dump(TOPOLOGY, sort_keys=False))
    started = time.monotonic()
    up = podlab("up", str(topo), "--backend", "vm", timeout=1500)
    print(f"\nvm lab up (image build included if cold): {time.monotonic() - started:.0f} s")
    nodes: dict[str, remote.Node] = {}
    try:
        assert up.returncode == 0, f"podlab up --backend vm failed:\n{up.stdout}\n{up.stderr}"
        lab = labctl.attach(LAB)
        control = lab.lab_dir / "control"
        nodes = {n: remote.connect(lab.plan.nodes[n], lab.ssh_config, control) for n in
                 ("c1-cp", "c1-w1")}  # fmt: skip
        yield VmLab(lab, nodes)
    finally:
        for node in nodes.values():
            node.close()
        if find(LAB).state.exists():  # the last test takes it down itself
            podlab("down", LAB, timeout=300)
        (REPO / "inventories" / f"{LAB}.yml").unlink(missing_ok=True)


def status_of(lab: str) -> dict[str, Any]:
    res = podlab("status", lab, "--format", "json")
    assert res.returncode == 0, res.stderr
    (entry,) = json.loads(res.stdout)["labs"]
    return dict(entry)


def test_guests_boot_with_their_identity_and_nothing_in_the_root_namespace(vmlab: VmLab) -> None:
    st = status_of(LAB)
    assert st["backend"] == "vm" and st["state"] == "up"
    for n in st["nodes"]:
        assert n["state"] == "up" and n["accel"] in ("kvm", "tcg") and n["kernel"], n
        assert n["emulated"] == (n["accel"] == "tcg")
    for name, node in vmlab.nodes.items():
        plan = vmlab.lab.plan.nodes[name]
        assert node.check(["hostname"]).stdout.strip() == name
        addrs = node.check(["ip", "-4", "-o", "addr", "show", "eth1"]).stdout
        assert str(plan.underlay.address) in addrs, f"{name}: eth1 has {addrs}"  # type: ignore[union-attr]
        assert node.check(["systemctl", "is-system-running"]).stdout.strip() == "running"
        assert node.check(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    via_exec = podlab("exec", "c1-w1", "--lab", LAB, "--", "hostname", timeout=120)
    assert via_exec.returncode == 0 and via_exec.stdout.strip() == "c1-w1", via_exec.stderr
    tag = naming.lab_tag(LAB)
    root_links = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    ours = [link["ifname"] for link in json.loads(root_links.stdout) if tag in link["ifname"]]
    assert ours == [naming.mgmt_bridge(LAB)], f"lab objects in the root netns: {ours}"
    inside = subprocess.run(["ip", "-n", naming.vm_netns(LAB), "-j", "link"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    names = {link["ifname"] for link in json.loads(inside)}
    assert {"brm", "bs0", "t0n0", "t0n1", "t1n0", "t1n1"} <= names, names


def test_deploy_installs_etcd_the_agent_and_the_controllers_as_systemd_units(vmlab: VmLab) -> None:
    took = labctl.deploy(vmlab.lab, attempts=1)
    print(f"\nfirst deploy through systemd: {took:.0f} s")
    for name, node in vmlab.nodes.items():
        units = node.check(["systemctl", "list-units", "--no-legend", "podlab-*"]).stdout
        assert "podlab-agent.service" in units and "running" in units, f"{name}: {units}"
        assert "podlab-podlab" not in units, f"{name}: doubled unit name in {units}"
    for unit in ("podlab-etcd", "podlab-controllers"):
        cp = vmlab.nodes["c1-cp"].check(["systemctl", "is-active", unit]).stdout
        assert cp.strip() == "active", f"c1-cp: {unit} is {cp.strip()}"
    labctl.wait_nodes_ready(vmlab.lab, None)
    client = vmlab.lab.client()
    vmlab.factory = pods.PodFactory(client, vmlab.nodes)
    vmlab.pods = vmlab.factory.create(["c1-cp", "c1-w1"], prefix="vm", wait_s=240)


def test_a_second_deploy_changes_nothing(vmlab: VmLab) -> None:
    # The systemd path's idempotence, as tests/integration/test_deploy.py judges the
    # supervisord path's: every task ok, none changed, on every guest.
    events: list[DeployEvent] = []
    started = time.monotonic()
    result = deploy(request_for(LAB, None, {}), on_event=events.append)
    print(f"\nsecond deploy through systemd: {time.monotonic() - started:.0f} s")
    assert result.ok, [str(f) for f in result.failures]
    assert set(result.hosts) == {"c1-cp", "c1-w1"}, result.hosts
    changed = changed_tasks(events)
    assert changed == [], f"a no-change re-deploy changed: {changed}"


def _counters(node: remote.Node, dev: str) -> int:
    data = json.loads(node.check(["ip", "-s", "-j", "link", "show", dev]).stdout)
    return int(data[0]["stats64"]["tx"]["packets"])


def _canary_seen(vmlab: VmLab, canary: str) -> bool:
    """Send a unique canary pod→pod while capturing on the receiver's underlay."""
    a, b = vmlab.pods or []
    cap = "/run/podlab-canary.txt"
    rx = vmlab.nodes[b.node.name]
    rx.start(["sh", "-c", f"tcpdump -l -n -A -i eth1 2>/dev/null > {cap}"], lifetime_s=25)
    time.sleep(3)
    for _ in range(3):
        a.run(echo.probe_command("udp", b.ip, pods.UDP_PORT, count=1, budget_s=5, payload=canary))
    time.sleep(2)
    return canary in rx.run(["cat", cap]).stdout


def _reach(vmlab: VmLab) -> None:
    a, b = vmlab.pods or []
    for src, dst in ((a, b), (b, a)):
        argv = echo.probe_command("tcp", dst.ip, pods.TCP_PORT, count=3, budget_s=20)
        report = echo.parse_probe(remote.output(src.run(argv, timeout_s=40)))
        assert report.all_ok, f"{src} cannot reach {dst} {dst.ip}: {report.describe()}"


def test_pods_reach_each_other_through_kernel_ipip(vmlab: VmLab) -> None:
    a, b = vmlab.pods or []
    node = vmlab.nodes[a.node.name]
    kind = node.check(["ip", "-d", "-j", "link", "show", "tunl0"]).stdout
    assert json.loads(kind)[0]["linkinfo"]["info_kind"] == "ipip"
    route = node.check(["ip", "route", "get", b.ip]).stdout
    assert "dev tunl0" in route, f"{a.node.name} routes {b.ip} via {route}"
    before = _counters(node, "tunl0")
    _reach(vmlab)
    assert _counters(node, "tunl0") > before, "no packet left through the kernel's tunl0"
    assert _canary_seen(vmlab, "podlab-canary-ipip"), "control: IPIP carries the canary in clear"


def test_ipvs_service_balances_and_one_without_endpoints_refuses(vmlab: VmLab) -> None:
    client = vmlab.lab.client()
    a, b = vmlab.pods or []
    web_svc = svc.service("vm-web", SUITE, [svc.port("tcp", 80, pods.TCP_PORT)])
    empty = svc.service("vm-empty", {"app": "nobody"}, [svc.port("tcp", 81, 81)])
    pods.apply_pods(client, [web_svc, empty])
    web = client.get(KINDS["Service"], pods.NAMESPACE, "vm-web")["spec"]["clusterIP"]
    none = client.get(KINDS["Service"], pods.NAMESPACE, "vm-empty")["spec"]["clusterIP"]
    node = vmlab.nodes[a.node.name]
    saved = svc.ipvs_saved(node, lambda text: text.count(f"-a -t {web}:80 ") == 2)
    assert saved.count(f"-a -t {web}:80 ") == 2, f"IPVS on {node.name}:\n{saved}"
    assert f"{web}/32" in node.check(["ip", "-o", "addr", "show", "kube-ipvs0"]).stdout
    argv = echo.probe_command("tcp", web, 80, count=12, budget_s=40)
    report = echo.parse_probe(remote.output(a.run(argv, timeout_s=60)))
    assert report.all_ok, f"{a} → ClusterIP {web}:80 over IPVS: {report.describe()}"
    answers = {r.split()[0] for r in report.replies() if r.split()}
    assert answers == {a.name, b.name}, f"answers only from {answers}"
    argv = echo.probe_command("tcp", none, 81, count=1, budget_s=10)
    refused = echo.parse_probe(remote.output(a.run(argv, timeout_s=30)))
    assert dict(refused.outcomes()) == {"refused": 1}, (
        f"no-endpoint {none}:81: {refused.describe()}"
    )
    # A later change is a diff on top of the table: the first service keeps its servers
    # (Debian's ipvsadm-restore clears the table first; restored through it, the diff
    # was all that was left).
    pods.apply_pods(client, [svc.service("vm-web2", SUITE, [svc.port("tcp", 81, pods.TCP_PORT)])])
    web2 = client.get(KINDS["Service"], pods.NAMESPACE, "vm-web2")["spec"]["clusterIP"]
    saved = svc.ipvs_saved(node, lambda text: text.count(f"-a -t {web2}:81 ") == 2)
    assert saved.count(f"-a -t {web2}:81 ") == 2, f"IPVS on {node.name}:\n{saved}"
    assert saved.count(f"-a -t {web}:80 ") == 2, f"{web}:80 lost its servers:\n{saved}"


def test_pods_reach_each_other_over_kernel_wireguard(vmlab: VmLab) -> None:
    # A mode switch (playbooks/switch.yml), as a conformance run moves between its
    # entries: the agents get the new configuration and restart through systemd. The
    # full deploy's systemd path was judged above; repeating it here cost ~13 minutes
    # of emulated guest time (780 s under load) for nothing the checks below look at.
    took = labctl.deploy(vmlab.lab, ModeSpec("ipip", "wireguard"), attempts=1, switch=True)
    print(f"\nmode switch to ipip+wireguard: {took:.0f} s")
    a, b = vmlab.pods or []
    node = vmlab.nodes[a.node.name]
    # Each agent routes its peer through WireGuard once it has the peer's new key: wait
    # for both directions (a probe from a node still between its IPIP and its WireGuard
    # route got "network unreachable").
    deadline = time.monotonic() + 120
    routes: dict[str, str] = {}
    while time.monotonic() < deadline:
        routes = {src.node.name: vmlab.nodes[src.node.name].check(["ip", "route", "get", dst.ip])
                  .stdout for src, dst in ((a, b), (b, a))}  # fmt: skip
        if all("dev wg" in route for route in routes.values()):
            break
        time.sleep(2)
    assert all("dev wg" in route for route in routes.values()), f"after 120 s: {routes}"
    dev = routes[a.node.name].split(" dev ")[1].split()[0]
    info = json.loads(node.check(["ip", "-d", "-j", "link", "show", dev]).stdout)
    assert info[0]["linkinfo"]["info_kind"] == "wireguard", f"{dev} is not kernel WireGuard"
    before = _counters(node, dev)
    _reach(vmlab)
    assert _counters(node, dev) > before
    assert not _canary_seen(vmlab, "podlab-canary-wg"), "the canary crossed the underlay in clear"


def test_down_leaves_nothing(vmlab: VmLab) -> None:
    paths = find(LAB)
    ledger = Ledger.load(paths)
    qemus = [(n.pid, n.start) for n in ledger.nodes.values()]
    started = time.monotonic()
    res = podlab("down", LAB, timeout=300)
    took = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    print(f"\nvm lab down: {took:.1f} s")
    assert not [pid for pid, start in qemus if pid and sysns.alive(pid, start)]
    assert not sysns.netns_path(naming.vm_netns(LAB)).exists()
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert naming.mgmt_bridge(LAB) not in links
    assert not paths.root.exists(), "the lab directory (overlays, identities) is still there"
    leftover = [p for p in Path("/proc").glob("[0-9]*/cmdline") if _mentions(p, str(paths.root))]
    assert not leftover, f"processes still using {paths.root}: {leftover}"


def _mentions(cmdline: Path, text: str) -> bool:
    try:
        return text in cmdline.read_bytes().decode(errors="replace")
    except OSError:
        return False
