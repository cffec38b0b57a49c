"""The netns backend on the real kernel: build labs, reach them, take them down.

Labs here are named ``t-lab-*`` with management subnets in 172.31.200-209.0/24;
every test takes its lab down in a ``finally`` (the ``labs`` fixture).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.errors import LabError, UserError
from harness.exec import run
from harness.lab import netns, snapshot, state, synth, sysns
from harness.lab.backend import UpRequest
from harness.lab.state import LabPaths, Ledger
from harness.plan.model import LabPlan

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PODLAB_HOME", str(tmp_path))  # labs in .podlab/, inventories/ beside
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def labs(home: Path) -> Iterator[list[str]]:
    """Names appended here are taken down after the test, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(UserError):
            netns.down(name)


def build(plan: LabPlan, labs: list[str], fault: str | None = None) -> LabPaths:
    labs.append(plan.name)
    netns.up(plan, UpRequest(plan=plan, fault=fault))
    return LabPaths.of(plan.name)


def in_node(lab: str, node: str, *cmd: str) -> str:
    """Run ``cmd`` in the node's namespaces through the real CLI (``podlab exec``)."""
    argv = [sys.executable, "-m", "harness.cli", "exec", node, "--lab", lab, "--", *cmd]
    return run(argv, timeout=30).stdout


def wait_gone(pids: set[tuple[int, int]], timeout: float = 30.0) -> set[tuple[int, int]]:
    """(pid, start) pairs still present (pid 1 reaps killed orphans asynchronously)."""
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < deadline:
        left = {(p, t) for p, t in left if sysns.start_time(p) == t}
        time.sleep(0.1)
    return left


def lab_facts(paths: LabPaths) -> tuple[set[int], set[tuple[int, int]]]:
    """(namespace inodes, (pid, start) pairs) the ledger recorded, to attribute leftovers."""
    ledger = Ledger.load(paths)
    inodes = {i for n in ledger.nodes.values() for i in (n.net_inode, n.mnt_inode) if i}
    inodes |= {i for i in ledger.bridge_netns.values() if i}
    pids = {
        (p, t)
        for n in ledger.nodes.values()
        for p, t in ((n.pid, n.start), (n.sshd_pid, n.sshd_start))
        if p and t
    }
    return inodes, pids


def assert_clean(before: snapshot.Snapshot, lab: str, paths: LabPaths, facts: tuple) -> None:
    """Nothing of ``lab`` is left. Killed processes are orphans that pid 1 reaps in its
    own time (seconds, under this machine's init), so leftovers get up to 30 s to go."""
    inodes, pids = facts
    assert not wait_gone(pids), f"lab {lab}: processes still present after down"
    deadline = time.monotonic() + 30
    while True:
        after = snapshot.take()
        leak = snapshot.leaked(before, after, lab, paths.root, inodes, pids)
        if not any(leak.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert leak == {"netns": [], "links": [], "mounts": [], "processes": []}, (
        f"lab {lab} left objects behind: {leak}\nall changes: {snapshot.diff(before, after)}"
    )
    assert not paths.root.exists(), f"lab dir {paths.root} not removed"
    assert state.registered(lab) is None


def test_star_lab_nodes_hostnames_ssh(labs: list[str]) -> None:
    plan = synth.star_plan("t-lab-star", "172.31.200.0/24", count=3)
    paths = build(plan, labs)
    for node in plan.nodes.values():
        assert in_node(plan.name, node.name, "hostname").strip() == node.name
        addrs = run(["ip", "-j", "addr", "show", "eth1"], netns=f"podlab-t-lab-star-{node.name}")
        got = {
            a["local"] for a in json.loads(addrs.stdout)[0]["addr_info"] if a["family"] == "inet"
        }
        assert got == {str(node.interfaces[0].address.ip)}
        ssh = run(["ssh", "-F", str(paths.ssh_config), node.name, "hostname"], timeout=20)
        assert ssh.stdout.strip() == node.name
    # The bridge segment is not in the root namespace, and the nodes reach each other over it.
    assert "podlab-t-lab-star-fabric" in os.listdir("/run/netns")
    w2 = str(plan.nodes["c1-w2"].interfaces[0].address.ip)
    assert "1 received" in in_node(plan.name, "c1-cp", "ping", "-c1", "-W2", w2)


def test_each_node_has_its_own_pid_namespace(labs: list[str]) -> None:
    """`ps` on a node lists that node's processes only, PID 1 is podlab-init and reaps
    orphans; the ledger keeps host pids (holder and sshd), so down stays exact."""
    plan = synth.star_plan("t-lab-pid", "172.31.212.0/24", count=2)
    paths = build(plan, labs)
    quiet = "</dev/null >/dev/null 2>&1"
    run(["ssh", "-F", str(paths.ssh_config), "c1-w1", f"setsid -f sleep 10017 {quiet}"], 20)

    def processes(node: str) -> list[tuple[int, str]]:
        out = in_node(plan.name, node, "ps", "-e", "-o", "pid=,args=")
        return [
            (int(pid), cmd)
            for pid, _, cmd in (ln.strip().partition(" ") for ln in out.splitlines())
        ]

    w1, cp = processes("c1-w1"), processes("c1-cp")
    assert any(cmd == "sleep 10017" for _, cmd in w1), f"control: c1-w1 runs the marker: {w1}"
    assert not any("10017" in cmd for _, cmd in cp), f"c1-cp sees c1-w1's process: {cp}"
    assert cp[0][0] == 1 and cp[0][1].startswith("podlab-init"), cp
    assert all(c.startswith(("podlab-init", "sshd", "ps")) for _, c in cp), cp
    # an orphan is re-parented to the node's PID 1, which reaps it: no zombie stays
    states = in_node(plan.name, "c1-cp", "sh", "-c", "(sleep 0.2 &); sleep 1; ps -e -o stat=")
    assert "Z" not in states, f"zombies on c1-cp: {states!r}"
    ledger = Ledger.load(paths)
    for name, node in ledger.nodes.items():  # host pids, as seen from the host
        assert sysns.ns_pids(node.pid or 0)[-1] == 1, f"{name}: holder is not its node's PID 1"
        assert Path(f"/proc/{node.sshd_pid}/comm").read_text().strip() == "sshd"
        node_pid = int(in_node(plan.name, name, "cat", "/run/podlab/sshd.pid"))
        assert sysns.ns_pids(node.sshd_pid or 0)[-1] == node_pid != node.sshd_pid
        # sshd is the node's own child: PID 1 reaps it, the host's init never waits on it
        ppid = in_node(plan.name, name, "ps", "-o", "ppid=", "-p", str(node_pid)).strip()
        assert ppid == "1", f"{name}: sshd's parent is {ppid}, not the node's PID 1"


def test_routed_lab_forwarding_routes_mtu(labs: list[str]) -> None:
    plan = synth.routed_plan("t-lab-routed", "172.31.201.0/24")
    host_forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    build(plan, labs)
    target = str(plan.nodes["c2-w1"].interfaces[0].address.ip)
    assert "1 received" in in_node(plan.name, "c1-w1", "ping", "-c1", "-W2", target)
    assert in_node(plan.name, "router", "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    assert in_node(plan.name, "c1-w1", "sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forwarding
    # p2p segment: MTU 1400 end to end, 1401 does not fit.
    ok = in_node(plan.name, "c1-cp", "ping", "-c1", "-W2", "-M", "do", "-s", "1372", "10.255.0.2")
    assert "1 received" in ok
    with pytest.raises(Exception, match="ping"):
        in_node(plan.name, "c1-cp", "ping", "-c1", "-W1", "-M", "do", "-s", "1373", "10.255.0.2")
    # No default route in any node, and node-private dirs are private.
    assert "default" not in in_node(plan.name, "c2-w1", "ip", "route")
    in_node(plan.name, "c1-cp", "touch", "/etc/podlab/only-c1-cp")
    assert "only-c1-cp" not in in_node(plan.name, "c1-w1", "ls", "/etc/podlab")
    assert not Path("/etc/podlab/only-c1-cp").exists()


def test_up_is_idempotent_and_refuses_other_topology(labs: list[str]) -> None:
    plan = synth.star_plan("t-lab-idem", "172.31.202.0/24", count=2)
    build(plan, labs)
    pids = lab_facts(LabPaths.of(plan.name))[1]
    again = netns.up(plan, UpRequest(plan=plan))
    assert again.already_up and lab_facts(LabPaths.of(plan.name))[1] == pids
    other = synth.star_plan("t-lab-idem", "172.31.202.0/24", count=3)
    with pytest.raises(UserError, match="different topology"):
        netns.up(other, UpRequest(plan=other))
    # A dead sshd is restarted by the next up; nothing else changes.
    paths = LabPaths.of(plan.name)
    victim = Ledger.load(paths).nodes["c1-w1"]
    assert sysns.kill_pid(victim.sshd_pid or 0, victim.sshd_start)
    fixed = netns.up(plan, UpRequest(plan=plan))
    assert fixed.already_up and "restarted sshd on c1-w1" in fixed.notes[0]
    ssh = run(["ssh", "-F", str(paths.ssh_config), "c1-w1", "hostname"], timeout=20)
    assert ssh.stdout.strip() == "c1-w1"
    assert Ledger.load(paths).nodes["c1-cp"].pid == victim_holder(paths, "c1-cp", pids)


def victim_holder(paths: LabPaths, node: str, before: set[tuple[int, int]]) -> int | None:
    """The node's holder pid, checked to be one that existed before (not rebuilt)."""
    pid = Ledger.load(paths).nodes[node].pid
    assert any(p == pid for p, _ in before)
    return pid


def test_mgmt_overlap_refused_with_hint(labs: list[str]) -> None:
    build(synth.star_plan("t-lab-ovl1", "172.31.203.0/24", count=1), labs)
    clash = synth.star_plan("t-lab-ovl2", "172.31.203.0/25", count=1)
    labs.append(clash.name)
    with pytest.raises(UserError, match=r"overlaps host .*ipv4-subnet"):
        netns.up(clash, UpRequest(plan=clash))
    assert not LabPaths.of(clash.name).root.exists()


def test_up_down_leaves_machine_as_found(labs: list[str]) -> None:
    """THE key test: nothing of the lab survives down — including processes started
    later inside nodes (a daemon via exec, one via ssh, one in a pod-like child netns)."""
    plan = synth.routed_plan("t-lab-clean", "172.31.204.0/24")
    before = snapshot.take()
    paths = build(plan, labs)
    facts = lab_facts(paths)
    quiet = "</dev/null >/dev/null 2>&1"
    in_node(plan.name, "c1-w1", "sh", "-c", f"setsid -f sleep 10007 {quiet}")
    run(
        ["ssh", "-F", str(paths.ssh_config), "c2-cp", f"setsid -f sleep 10008 {quiet}"],
        timeout=20,
    )
    in_node(plan.name, "router", "sh", "-c", f"setsid -f unshare -n -m sleep 10009 {quiet}")
    time.sleep(0.3)
    extra = {
        (int(p.split(":")[0]), int(p.split(":")[1]))
        for p in snapshot.take().processes
        if any(p.endswith(f"sleep {n}") for n in (10007, 10008, 10009))
    }
    assert len(extra) == 3, "the test's own daemons did not start"
    netns.down(plan.name)
    labs.remove(plan.name)
    assert_clean(before, plan.name, paths, (facts[0], facts[1] | extra))


@pytest.mark.parametrize("phase", ["nodes", "segments", "sshd"])
def test_failed_up_rolls_back(labs: list[str], phase: str) -> None:
    plan = synth.routed_plan("t-lab-fail", "172.31.205.0/24")
    before = snapshot.take()
    paths = LabPaths.of(plan.name)
    with pytest.raises(LabError, match="injected failure"):
        build(plan, labs, fault=phase)
    assert_clean(before, plan.name, paths, (set(), set()))


def test_crashed_up_is_removed_by_down_and_cleanup(home: Path, labs: list[str]) -> None:
    """An `up` killed halfway (no rollback at all) is still fully removable."""
    before = snapshot.take()
    code = (
        "from harness.lab import netns, synth\n"
        "from harness.lab.backend import UpRequest\n"
        "p = synth.routed_plan('t-lab-crash', '172.31.206.0/24')\n"
        "netns.up(p, UpRequest(plan=p, fault='crash:addresses'))\n"
    )
    labs.append("t-lab-crash")
    res = run([sys.executable, "-c", code], timeout=60, check=False)
    assert res.returncode == 3, res.stderr
    paths = LabPaths.of("t-lab-crash")
    facts = lab_facts(paths)
    assert Ledger.load(paths).status == "building"
    assert any(n.startswith("podlab-t-lab-crash-") for n in os.listdir("/run/netns"))
    from harness.lab import cleanup

    report = cleanup.cleanup()
    assert "t-lab-crash" in report.labs
    assert_clean(before, "t-lab-crash", paths, facts)


def test_cli_up_status_down_with_topology_file(home: Path, labs: list[str]) -> None:
    src = (REPO / "topologies" / "two-clusters.clab.yml").read_text()
    topo = home / "two.clab.yml"
    topo.write_text(
        src.replace("name: two-clusters", "name: t-lab-cli\nmgmt: {ipv4-subnet: 172.31.207.0/24}")
    )
    labs.append("t-lab-cli")
    cli = [sys.executable, "-m", "harness.cli"]
    up = run([*cli, "up", str(topo)], timeout=60)
    assert "c2-w2" in up.stdout
    assert (home / "inventories" / "t-lab-cli.yml").exists()
    status = json.loads(run([*cli, "status", "t-lab-cli", "--format", "json"]).stdout)
    (lab,) = status["labs"]
    nodes = yaml.safe_load(src)["topology"]["nodes"]
    linux = [n for n, spec in nodes.items() if (spec or {}).get("kind", "linux") == "linux"]
    assert lab["state"] == "up" and sorted(n["node"] for n in lab["nodes"]) == sorted(linux)
    assert {n["state"] for n in lab["nodes"]} == {"up"}
    c2 = next(n for n in lab["nodes"] if n["node"] == "c2-w2")["underlay"].split("/")[0]
    assert "1 received" in in_node("t-lab-cli", "c1-w1", "ping", "-c1", "-W2", c2)
    again = run([*cli, "up", str(topo)], timeout=60)
    assert "already up" in again.stderr
    run([*cli, "down", str(topo)], timeout=60)
    assert json.loads(run([*cli, "status", "t-lab-cli", "--format", "json"]).stdout)["labs"] == []


def test_ssh_backend_checks_inventory_hosts(home: Path, labs: list[str]) -> None:
    plan = synth.star_plan("t-lab-sshb", "172.31.208.0/24", count=2)
    build(plan, labs)
    inventory = home / "inventories" / "t-lab-sshb.yml"
    cli = [sys.executable, "-m", "harness.cli"]
    res = run([*cli, "up", "unused.clab.yml", "--backend", "ssh", "--inventory", str(inventory)])
    assert res.stdout.count(" up ") >= 2 and "unreachable" not in res.stdout + res.stderr
    # A host that does not answer (an unused address of the lab's own mgmt subnet).
    broken = home / "broken.yml"
    broken.write_text(inventory.read_text().replace("172.31.208.3", "172.31.208.250"))
    res = run([*cli, "up", "x", "--backend", "ssh", "--inventory", str(broken)], check=False)
    assert res.returncode == 1 and "unreachable: c1-w1" in res.stderr


def test_cleanup_leaves_live_labs_and_unmarked_namespaces(home: Path, labs: list[str]) -> None:
    from harness.lab import cleanup

    plan = synth.star_plan("t-lab-live", "172.31.209.0/24", count=1)
    build(plan, labs)
    foreign = "podlab-t-lab-unmarked"
    sysns.create_netns(foreign)
    try:
        report = cleanup.cleanup()
        assert "t-lab-live" not in report.labs
        assert foreign in report.left_alone and foreign in os.listdir("/run/netns")
        assert netns.is_alive(Ledger.load(LabPaths.of("t-lab-live")))
    finally:
        sysns.remove_netns(foreign)


def test_down_never_kills_in_a_recycled_namespace(home: Path) -> None:
    """A ledger's recorded netns inode may belong to someone else's namespace by the
    time of `down` (the kernel recycles inodes): without the lab's marker there,
    nothing in it is touched; with the marker, it is the lab's and is killed."""
    from harness.lab import links, teardown

    foreign = "podlab-t-lab-recycled"
    inode = sysns.create_netns(foreign)
    try:
        run(["sh", "-c", "setsid -f sleep 10011 </dev/null >/dev/null 2>&1"], netns=foreign)
        victims = {p for p in sysns.pids() if sysns.ns_links(p)[0] == inode}
        assert victims
        ledger = Ledger("t-lab-gone", "x", "d", "up", "plm-x", "172.31.209.0/24")
        ledger.nodes["n1"] = state.NodeState("podlab-t-lab-gone-n1", "172.31.209.2/24", "plxm0")
        ledger.nodes["n1"].net_inode = inode  # recorded long ago; holder long dead
        assert teardown.kill_processes(ledger) == []
        assert all(sysns.alive(p, None) for p in victims)
        links.mark_netns(foreign, "t-lab-gone")
        assert set(teardown.kill_processes(ledger)) == victims
    finally:
        sysns.kill_where({inode}, set(), skip={os.getpid()})
        sysns.remove_netns(foreign)


_IP_NETNS_AFTER_US = r"""
import subprocess, sys
from harness.errors import LabError
from harness.lab import sysns
from harness.lab.sysns import MS_PRIVATE, MS_REC, mount

mount("", "/", None, MS_PRIVATE | MS_REC)  # nothing below leaves this mount namespace
mount("tmpfs", "/run", "tmpfs", 0)  # a /run whose netns directory is no mount point yet
sysns.NETNS_DIR.mkdir()
sysns.bind_netns("podlab-t-ours", "/proc/self/ns/net")
subprocess.run(["ip", "netns", "add", "t-theirs"], check=True)  # iproute2 binds the dir

def remove(name):
    try:
        print("removed" if sysns.remove_netns(name) else "missing")
    except LabError as exc:
        print(f"busy: {exc}")

remove("podlab-t-ours")
# A handle made the old way (no bind of the directory first): down names it, no traceback.
mount("tmpfs", "/run", "tmpfs", 0)
sysns.NETNS_DIR.mkdir()
old = sysns.netns_path("podlab-t-old")
old.touch()
mount("/proc/self/ns/net", str(old), None, sysns.MS_BIND)
subprocess.run(["ip", "netns", "add", "t-theirs"], check=True)
remove("podlab-t-old")
"""


def test_a_later_ip_netns_add_does_not_pin_our_handles() -> None:
    """``ip netns add`` binds /run/netns onto itself the first time it finds no mount
    there; done after our handles existed, the bind hid their first mounts and ``down``
    failed with EBUSY (a full-matrix run, 2026-12-05). In a private mount namespace with
    a fresh /run: our handle, then iproute2's, then our remove must succeed; a handle
    pinned the old way is reported as a located error, not a traceback."""
    out = run(["unshare", "--mount", sys.executable, "-c", _IP_NETNS_AFTER_US],
              check=False, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    ours, old = out.stdout.strip().splitlines()[-2:]
    assert ours == "removed", out.stdout
    assert old.startswith("busy: /run/netns/podlab-t-old: still mounted where no path"), old


OTHER_SESSION = """
import sys
from harness.conformance import remote
from harness.lab import synth
from harness.lab.state import LabPaths
plan = synth.star_plan("t-lab-tcm", "172.31.219.0/24", count=1)
paths = LabPaths.of(plan.name)
for node in remote.connect_lab(plan, paths.ssh_config, paths.root).values():
    node.run(["true"])
    node.close()
"""


def test_a_session_closing_its_ssh_masters_leaves_anothers_commands_running(
    labs: list[str],
) -> None:
    """Two conformance sessions on one node (lockstep: c1, c2 and the mesh run at
    once): the first to finish closes its ssh masters (``ssh -O exit``) while the
    other is mid-command. With one shared control path that killed the other's
    master and its command ended in ssh's 255 with no message (issue 12's
    scenario 25 and 11 failures); each session's masters are now its own."""
    from concurrent.futures import ThreadPoolExecutor

    from harness.conformance import remote

    plan = synth.star_plan("t-lab-tcm", "172.31.219.0/24", count=1)
    paths = build(plan, labs)
    (node,) = remote.connect_lab(plan, paths.ssh_config, paths.root).values()
    try:
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(node.run, ["sh", "-c", "sleep 3; echo done"], 20)
            time.sleep(1)  # the command is running over this session's master
            other = run([sys.executable, "-c", OTHER_SESSION], timeout=60, check=False)
            assert other.returncode == 0, other.stderr
            res = long.result()  # old code: LabError ... exit_status=255, no stderr
        assert res.returncode == 0 and res.stdout.strip() == "done", res
        assert node.run(["true"]).returncode == 0  # this session's master still serves
    finally:
        node.close()
    assert not remote.control_dir(paths.root, [node.name]).exists()  # closed, removed


KEPT_SESSION = """
from harness.conformance import remote
from harness.lab import synth
from harness.lab.state import LabPaths
plan = synth.star_plan("t-lab-keep", "172.31.227.0/24", count=1)
paths = LabPaths.of(plan.name)
for node in remote.connect_lab(plan, paths.ssh_config, paths.root, keep="c1").values():
    assert node.run(["true"]).returncode == 0
"""


def _master_pid(paths: LabPaths, control_path: Path) -> int | None:
    import re

    res = run(["ssh", "-F", str(paths.ssh_config), "-o", f"ControlPath={control_path}",
               "-O", "check", control_path.name], timeout=10, check=False)  # fmt: skip
    found = re.search(r"pid=(\d+)", res.stderr)
    return int(found.group(1)) if found else None


def test_a_kept_role_s_master_serves_its_next_session_until_the_run_closes_it(
    labs: list[str],
) -> None:
    """Lockstep phases: c1's share keeps its masters (``--ssh-keep c1``); the next
    phase's session (another process) runs over the same master, a master that died
    meanwhile is replaced over its stale socket, and ``close_kept`` leaves no ssh
    process and no directory (this test's deep lab dir puts them in the tmp fallback)."""
    from harness.conformance import hygiene, remote

    plan = synth.star_plan("t-lab-keep", "172.31.227.0/24", count=1)
    paths = build(plan, labs)
    (name,) = [n for n in plan.nodes if n not in plan.bridges]
    sock = remote.control_dir(paths.root, [name], owner="keep-c1") / name
    session = [sys.executable, "-c", KEPT_SESSION]
    try:
        assert run(session, timeout=60, check=False).returncode == 0
        first = _master_pid(paths, sock)
        assert first is not None  # the session is over, its master is not
        assert run(session, timeout=60, check=False).returncode == 0
        assert _master_pid(paths, sock) == first  # no new handshake
        os.kill(first, 9)
        assert wait_gone({(first, sysns.start_time(first))}, 10) == set() and sock.exists()
        assert run(session, timeout=60, check=False).returncode == 0  # over the stale socket
        assert _master_pid(paths, sock) not in (None, first)
    finally:
        closed = remote.close_kept(paths.root, paths.ssh_config)
    assert closed == [str(sock.parent)]
    assert not sock.parent.exists()
    time.sleep(0.5)
    masters = [c for _, c in hygiene._processes(str(paths.root)) if c.split()[0] == "ssh"]
    assert masters == []  # the node's sshd is the lab's; no ssh client (master) is left
