"""`podlab deploy` on real netns labs: first deploy, changed=0 re-deploy, testinfra
checks, a host with its sshd killed, and the VM path (plain SSH inventory)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.deploy.deploy import deploy, request_for, source_root, wheelhouse_cache
from harness.deploy.runner import DeployEvent, DeployResult, changed_tasks
from harness.deploy.wheel import Wheelhouse, ensure_wheelhouse
from harness.lab.state import find
from harness.testlab.deploylab import (
    REPO,
    lab_up,
    node_run,
    node_ssh,
    plain_ssh_inventory,
    podlab,
    stop_sshd,
)
from harness.testlab.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.timeout(900)]

LAB = "t-dep-one"
VM_LAB = "t-dep-vm"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with lab_up("single-cluster", LAB, "172.31.210.0/24", tmp_path_factory.mktemp("t")) as inv:
        yield inv


@pytest.fixture(scope="module")
def wheelhouse() -> Wheelhouse:
    """One wheelhouse for the module: the tree may be edited while the tests run."""
    return ensure_wheelhouse(source_root(), wheelhouse_cache())


def run_deploy(
    lab: str,
    inventory: Path,
    wheelhouse: Wheelhouse | None = None,
    switch: bool = False,
    **overrides: str,
) -> tuple[DeployResult, list[DeployEvent]]:
    events: list[DeployEvent] = []
    req = request_for(lab, str(inventory), overrides, switch=switch)
    result = deploy(req, on_event=events.append, wheelhouse=wheelhouse)
    return result, events


def describe(result: DeployResult) -> str:
    failures = "\n".join(str(f) for f in result.failures)
    return f"status={result.status} rc={result.rc} log={result.artifacts}\n{failures}"


def infra_checks(inventory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/infra", "-q", "-p", "no:cacheprovider",
         "--hosts=ansible://all", f"--ansible-inventory={inventory}"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_first_deploy_succeeds_on_every_host(inventory: Path, wheelhouse: Wheelhouse) -> None:
    result, _ = run_deploy(LAB, inventory, wheelhouse)
    assert result.ok, describe(result)
    # the cluster nodes get etcd and the agent; the router and the outside host `common`
    assert set(result.hosts) == {"c1-cp", "c1-w1", "c1-w2", "router", "outside"}
    assert all(h.healthy for h in result.hosts.values()), result.hosts
    assert (result.artifacts / "job_events").is_dir(), "event log not kept"


def test_second_deploy_changes_nothing(inventory: Path, wheelhouse: Wheelhouse) -> None:
    result, events = run_deploy(LAB, inventory, wheelhouse)
    assert result.ok, describe(result)
    changed = changed_tasks(events)
    assert changed == [], f"a no-change re-deploy changed: {changed}"
    for host, recap in result.hosts.items():
        assert recap.changed == 0, f"{host}: changed={recap.changed}"


def test_export_renders_what_the_deploy_wrote(inventory: Path, tmp_path: Path) -> None:
    """`podlab export clab` renders each node's files from playbooks/ itself
    (harness/deploy/render.py); on a netns lab they are byte for byte what the
    deploy wrote on the node (configs, supervisord programs and configuration)."""
    from harness.deploy.render import node_services
    from harness.plan.build import load_plan
    from harness.testlab.deploylab import topology_copy

    plan = load_plan(topology_copy("single-cluster", LAB, "172.31.210.0/24", tmp_path))
    compared = 0
    for node in plan.nodes.values():
        services = node_services(plan, node, backend="netns")
        if services is None:
            continue
        for path, content in services.files.items():
            assert node_ssh(LAB, node.name, "cat", path) == content, f"{node.name}:{path}"
            compared += 1
    assert compared == 7 + 3 + 3  # c1-cp: etcd, agent, controllers (+ programs), workers


def test_testinfra_checks_pass_on_the_deployed_lab(inventory: Path) -> None:
    proc = infra_checks(inventory)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_mode_override_reaches_agent_config(inventory: Path, wheelhouse: Wheelhouse) -> None:
    # --mode becomes an extra var: the agent's config changes (and the agent
    # restarts) on every cluster node, then changes back. In bgp, `birdc` typed on
    # a node with no flags talks to that node's BIRD (its socket is BIRD's default,
    # in the node's private /run).
    over, events = run_deploy(LAB, inventory, wheelhouse, podlab_mode="bgp")
    assert over.ok, describe(over)
    changed = {e.host for e in events if e.changed and e.task.startswith("Run podlab-agent under")}
    assert changed == {"c1-cp", "c1-w1", "c1-w2"}, changed
    text = node_ssh(LAB, "c1-w1", "cat", "/etc/podlab/agent.yaml")
    assert "mode: bgp" in text, text
    for node, peers in (("c1-cp", 2), ("c1-w1", 2), ("c1-w2", 2)):
        wait_for(
            f"birdc on {node} shows {peers} Established sessions",
            lambda node=node, peers=peers: (
                node_ssh(LAB, node, "birdc", "show", "protocols").count("Established") == peers
            ),
            timeout=60,
        )
    # control: /run is node-private, so a node without BIRD reaches no one's socket
    assert node_run(LAB, "router", "birdc", "show", "protocols").returncode != 0
    # back with `--switch` (playbooks/switch.yml): only the agents' part and the
    # mode-dependent plays run, and the agents restart into vxlan
    back, events = run_deploy(LAB, inventory, wheelhouse, switch=True)
    assert back.ok and not back.plays_not_run, describe(back)
    tasks = {e.task for e in events if e.kind == "task"}
    assert "Run podlab-agent under supervisord" in tasks, sorted(tasks)
    # (a task skipped by its `when` still starts; these are in plays a switch has not)
    not_in_a_switch = {
        "Run etcd under supervisord",
        "Run podlab-controllers under supervisord",
        "Create the node's directories and apply the datapath's sysctls",
    }
    assert not tasks & not_in_a_switch, sorted(tasks)
    changed = {e.host for e in events if e.changed and e.task.startswith("Run podlab-agent under")}
    assert changed == {"c1-cp", "c1-w1", "c1-w2"}, changed
    assert "mode: vxlan" in node_ssh(LAB, "c1-w1", "cat", "/etc/podlab/agent.yaml")


def test_supervisorctl_needs_no_flags_on_a_node(inventory: Path) -> None:
    out = node_ssh(LAB, "c1-w1", "supervisorctl", "status")
    assert "podlab-agent" in out and "RUNNING" in out, out
    assert "etcd" not in out, f"c1-w1 shows another node's programs: {out}"  # etcd is c1-cp's


PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: c1-w1
  containers: [{name: web, command: [python, -m, harness.workloads.echo, --tcp, "8080"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: c1-w2
  containers: [{name: c, command: [sleep, infinity]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_exec_in_a_pod_sees_what_the_pod_sees(inventory: Path, tmp_path: Path) -> None:
    """`podlab exec pod/…` as kubectl exec: the pod's resolver, environment, working
    directory and exit status, stdin only with -i."""
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(PODS)
    applied = podlab("apply", "-f", str(manifest), "--lab", LAB)
    assert applied.returncode == 0, applied.stderr
    try:

        def running() -> bool:
            got = podlab("get", "pods", "--lab", LAB, "-o", "json")
            items = json.loads(got.stdout or "{}").get("items", [])
            return sorted(i["status"].get("phase") for i in items) == ["Running", "Running"]

        wait_for("web and client Running", running, timeout=60, every=1.0)
        svc = json.loads(podlab("get", "svc", "web", "--lab", LAB, "-o", "json").stdout)
        fqdn = "web.default.svc.cluster.local"
        res = podlab("exec", "pod/client", "--lab", LAB, "--", "getent", "hosts", fqdn)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split()[:2] == [svc["spec"]["clusterIP"], fqdn], res.stdout
        # control: the pod's network namespace alone reads the node's resolv.conf
        bare = node_run(LAB, "c1-w2", "ip", "netns", "exec", "pod-default-client",
                        "getent", "hosts", fqdn)  # fmt: skip
        assert bare.returncode == 2, f"resolved without the pod's resolv.conf: {bare.stdout}"
        script = 'echo "$POD_NAME $POD_NAMESPACE $NODE_NAME $(pwd)"; exit 7'
        env = podlab("exec", "pod/client", "--lab", LAB, "--", "sh", "-c", script)
        assert (env.returncode, env.stdout) == (7, "client default c1-w2 /\n"), env
        fed = podlab("exec", "-i", "pod/client", "--lab", LAB, "--", "cat", input="hello\n")
        assert (fed.returncode, fed.stdout) == (0, "hello\n"), fed
        unfed = podlab("exec", "pod/client", "--lab", LAB, "--", "cat", input="hello\n")
        assert (unfed.returncode, unfed.stdout) == (0, ""), "stdin passed without -i"
        missing = podlab("exec", "pod/client", "--lab", LAB, "--", "no-such-command")
        assert missing.returncode == 127, missing
    finally:
        gone = podlab("delete", "-f", str(manifest), "--lab", LAB, "--grace-period", "0",
                      "--ignore-not-found", "--wait")  # fmt: skip
        assert gone.returncode == 0, gone.stderr


def test_podlab_hollow_resizes_and_removes(inventory: Path) -> None:
    """`podlab hollow` on the deployed lab: the runner runs supervised on c1-cp, the real
    agents program its nodes as peers, a resize keeps the nodes it keeps, 0 removes
    them (docs/hollow.md); a size that cannot fit is refused before anything runs."""

    def nodes() -> dict[str, list[str]]:
        out = podlab("get", "nodes", "--lab", LAB).stdout.splitlines()[1:]
        return {row[0]: row for row in (line.split() for line in out)}

    def hollow() -> dict[str, str]:  # name -> pod CIDR, the Ready hollow nodes
        return {n: r[2] for n, r in nodes().items() if r[5] == "yes" and r[1] == "Ready"}

    big = podlab("hollow", LAB, "--cluster", "c1", "--nodes", "300")
    assert big.returncode == 2 and "leaves 252 /24 subnets" in big.stderr, big
    assert hollow() == {}, "a refused size started something"
    grown = podlab("hollow", LAB, "--cluster", "c1", "--nodes", "3")
    assert grown.returncode == 0, grown.stderr
    three = hollow()
    assert len(three) == 3, nodes()
    cp_ip = nodes()["c1-cp"][3]
    fdb = lambda: node_ssh(LAB, "c1-w1", "bridge", "fdb", "show", "dev", "flannel.1")  # noqa: E731
    wait_for("c1-w1 has an FDB entry per hollow peer", lambda: fdb().count(f"dst {cp_ip}") == 4)
    assert "podlab-hollow" in node_ssh(LAB, "c1-cp", "supervisorctl", "status")
    shrunk = podlab("hollow", LAB, "--cluster", "c1", "--nodes", "1")
    assert shrunk.returncode == 0, shrunk.stderr
    first = min(three)
    assert hollow() == {first: three[first]}, "a shrink keeps the node it keeps"
    gone = podlab("hollow", LAB, "--cluster", "c1", "--nodes", "0")
    assert gone.returncode == 0, gone.stderr
    assert hollow() == {} and all(r[5] == "no" for r in nodes().values()), nodes()
    assert "podlab-hollow" not in node_ssh(LAB, "c1-cp", "supervisorctl", "status")
    wait_for("hollow peers leave c1-w1", lambda: fdb().count(f"dst {cp_ip}") == 1)


def test_broken_host_is_named_with_its_task(inventory: Path) -> None:
    stop_sshd(LAB, "c1-w2")
    proc = podlab("deploy", LAB, "--quiet")
    assert proc.returncode != 0, "deploy succeeded with c1-w2's sshd stopped"
    err = proc.stderr
    assert "c1-w2: task 'Look up the node's namespace and packages' unreachable" in err, err
    # The other hosts are accounted for: no failure, and where they stopped.
    assert "c1-cp: no failure, completed" in err, err
    assert "c1-w1: no failure, completed" in err, err
    assert "event log" in err, err
    assert "unreachable" in proc.stdout, proc.stdout  # the recap's verdict column


def test_vm_path_deploys_over_plain_ssh(tmp_path: Path, wheelhouse: Wheelhouse) -> None:
    # A fresh lab deployed only through --inventory, as existing machines would be.
    with lab_up("single-cluster", VM_LAB, "172.31.211.0/24", tmp_path) as lab_inventory:
        vms = plain_ssh_inventory(lab_inventory, tmp_path)
        proc = podlab("deploy", VM_LAB, "--inventory", str(vms), "--quiet")  # the CLI path
        assert proc.returncode == 0, proc.stdout + proc.stderr
        first, _ = run_deploy(VM_LAB, vms, wheelhouse)  # the tree may have moved since
        assert first.ok, describe(first)
        again, events = run_deploy(VM_LAB, vms, wheelhouse)
        changed = changed_tasks(events)
        assert again.ok and changed == [], (describe(again), changed)
        checks = infra_checks(vms)
        assert checks.returncode == 0, checks.stdout[-4000:] + checks.stderr[-2000:]


def test_refuses_to_deploy_into_its_own_namespace(tmp_path: Path) -> None:
    # A "netns node" that is really this machine's own namespace: the first,
    # read-only task finds out and the deploy stops before anything is written.
    inv = tmp_path / "self.yml"
    inv.write_text(
        "all:\n  vars: {podlab_backend: netns, ansible_connection: local,\n"
        f"         ansible_python_interpreter: {sys.executable}}}\n"
        "  hosts: {self: {}}\n"
    )
    lab = "t-dep-guard"
    try:
        result, events = run_deploy(lab, inv)
    finally:
        shutil.rmtree(find(lab).root, ignore_errors=True)
    assert not result.ok
    assert [(f.host, f.task) for f in result.failures] == [
        ("self", "Refuse to deploy into podlab's own network namespace")
    ], describe(result)
    assert not any(e.changed for e in events), "something was changed before the refusal"
