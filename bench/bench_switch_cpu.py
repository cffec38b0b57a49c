"""Benchmark: where the CPU of a whole-lab mode switch goes, per process kind.

    nice -n 10 .venv/bin/python bench/bench_switch_cpu.py --lab LAB \
        [--podlab TREE/.venv/bin/podlab] [--modes udp,host-gw,…] [--json FILE]

Runs ``podlab deploy LAB --switch --mode M --encryption E --quiet`` once per mode
(``M+E`` names an encryption, as ``host-gw+wireguard``) with the ``podlab`` given (another
tree's, to compare), and accounts for every process of the machine meanwhile:

- BSD process accounting (``accton FILE`` … ``accton off``; Debian's ``acct``; needs
  root) for each process that ended during the switch: its user+system CPU seconds,
  pid and parent (the kernel writes one record per process at its exit, exact to the
  tick: short Python starts the sampling below would miss are in it);
- ``/proc/PID/stat`` before and after for the processes that outlived it (the CPU
  they used meanwhile: the new agents, supervisord, etcd, the ssh masters) and
  sampled every 50 ms between, for the parents of processes that came and went;
- ``/proc/stat`` for what the whole machine spent busy (interrupts and kernel
  threads included: what no process is charged with is shown as "not in a process").

Each process is attributed by its ancestry: under a node's ``podlab-init … LAB/NODE``
it is that node's, under the deploy's own process it is the controller's, else
"other" (the neighbours' labs: the machine is shared). Kinds: sshd, the Ansible
modules' Python starts (``python3`` under sshd), the agent and its check
(``podlab-agent`` under supervisord or not), the syncer and its check, supervisord,
etcd, the agent's commands, and on the controller ansible-playbook and its forks,
ssh, podlab. Prints per switch the wall, the machine's busy CPU and the breakdown;
asserts nothing on time.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
STAT = re.compile(rb"^(\d+) \((.*)\) (\S) (\d+)")


@dataclass
class Proc:
    pid: int
    comm: str
    ppid: int
    start: int = 0  # starttime, ticks since boot (0: unknown)
    cpu0: float = 0.0  # CPU seconds at the first snapshot (0 if started after it)
    cpu: float = 0.0  # CPU seconds at the last sight
    cmd: str = ""
    seen_before: bool = False
    alive_after: bool = False
    exited_cpu: float | None = None  # from the accounting record
    children: list[int] = field(default_factory=list)


def read_proc(pid: int) -> tuple[str, int, int, float, str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()[:300].replace(b"\0", b" ")
    except OSError:
        return None
    m = STAT.match(raw)
    if not m:
        return None
    rest = raw[m.end() :].split()
    # after ppid: pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    utime, stime = int(rest[9]), int(rest[10])
    start = int(rest[17])
    comm = m.group(2).decode(errors="replace")
    return comm, int(m.group(4)), start, (utime + stime) / HZ, cmd.decode(errors="replace")


def snapshot() -> dict[int, tuple[str, int, int, float, str]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = read_proc(int(name))
            if info:
                out[int(name)] = info
    return out


def busy_s() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / HZ


def read_acct(path: Path) -> list[tuple[str, float, int, int]]:
    """(comm, CPU seconds, pid, ppid) per record of a BSD accounting file (dump-acct)."""
    out = subprocess.run(["dump-acct", str(path)], capture_output=True, text=True, check=True)
    rows = []
    for line in out.stdout.splitlines():
        f = [x.strip() for x in line.split("|")]
        if len(f) < 10 or f[1] != "v3":
            continue
        rows.append((f[0], (float(f[2]) + float(f[3])) / HZ, int(f[9]), int(f[10])))
    return rows


def measure(argv: list[str], lab: str) -> dict:
    """Run ``argv`` (a switch) under accounting; its wall, the machine's CPU, the breakdown."""
    tmp = Path(tempfile.mkdtemp(prefix="swcpu-acct-"))
    acct = tmp / "pacct"
    acct.touch()
    procs: dict[int, Proc] = {}
    for pid, (comm, ppid, start, cpu, cmd) in snapshot().items():
        procs[pid] = Proc(pid, comm, ppid, start, cpu, cpu, cmd, seen_before=True)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            for pid, (comm, ppid, start, cpu, cmd) in snapshot().items():
                p = procs.get(pid)
                if p is None or (p.start and start != p.start):
                    procs[pid] = Proc(pid, comm, ppid, start, 0.0, cpu, cmd)
                else:
                    p.cpu, p.comm, p.cmd = cpu, comm, cmd or p.cmd

    subprocess.run(["accton", str(acct)], check=True, capture_output=True)
    sampler = threading.Thread(target=sample, daemon=True)
    busy0, t0 = busy_s(), time.monotonic()
    sampler.start()
    try:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = child.communicate()
    finally:
        wall = time.monotonic() - t0
        busy = busy_s() - busy0
        stop.set()
        sampler.join()
        subprocess.run(["accton", "off"], check=True, capture_output=True)
    deploy_pid = child.pid
    if deploy_pid not in procs:
        procs[deploy_pid] = Proc(deploy_pid, "podlab", os.getpid())
    after = snapshot()
    for pid, (comm, ppid, start, cpu, cmd) in after.items():
        p = procs.get(pid)
        if p is None or (p.start and start != p.start):
            procs[pid] = Proc(pid, comm, ppid, start, 0.0, cpu, cmd, alive_after=True)
        else:
            p.cpu, p.alive_after = cpu, True
    for comm, cpu, pid, ppid in read_acct(acct):
        p = procs.get(pid)
        if p is None or p.alive_after:
            if p is not None and p.alive_after:
                continue  # a reused pid's record; the living one is counted
            procs[pid] = p = Proc(pid, comm, ppid)
        p.exited_cpu, p.ppid = cpu, ppid or p.ppid
        if not p.comm:
            p.comm = comm
    shutil.rmtree(tmp, ignore_errors=True)

    def used(p: Proc) -> float:
        if p.exited_cpu is not None:
            return max(p.exited_cpu - (p.cpu0 if p.seen_before else 0.0), 0.0)
        if p.alive_after:
            return p.cpu - (p.cpu0 if p.seen_before else 0.0)
        return p.cpu - (p.cpu0 if p.seen_before else 0.0)  # gone, no record (before accton)

    node_re = re.compile(rf"podlab-init .*\s{re.escape(lab)}/(\S+)")

    def owner(p: Proc) -> str:
        seen = set()
        q: Proc | None = p
        while q is not None and q.pid not in seen:
            seen.add(q.pid)
            if q.pid == deploy_pid:
                return "controller"
            m = node_re.search(q.cmd) if q.comm == "podlab-init" else None
            if m:
                return m.group(1)
            q = procs.get(q.ppid)
        if p.pid == os.getpid():
            return "bench"
        if f".podlab/{lab}/" in p.cmd and p.comm == "ssh":
            return "controller"  # the ssh masters (ControlPersist: their parent is gone)
        return "other"

    def kind(p: Proc, where: str) -> str:
        parent = procs.get(p.ppid)
        pc = parent.comm if parent else ""
        c = p.comm
        if where == "controller":
            if c.startswith("ansible-playboo"):
                if pc.startswith("ansible-playboo"):
                    return "ctl ansible-playbook's workers (a fork per task and host)"
                return "ctl ansible-playbook (its main process)"
            if c == "ssh":
                return "ctl ssh clients + masters"
            if p.pid == deploy_pid:
                return "ctl podlab deploy"
            return f"ctl {c}"
        if c == "sshd":
            return "node sshd"
        if c.startswith("python3") and pc in ("sshd", "sh", "bash"):
            return "node Ansible module (python3)"
        if c in ("sh", "bash") and pc == "sshd":
            return "node sh (module wrapper)"
        if c.startswith("podlab-agent") or "podlab-agent" in p.cmd.split(" --config")[0]:
            if pc != "supervisord":
                return "node agent --check"
            if p.seen_before:
                return "node agent (old: its stop)"
            return "node agent (new: start, first sync)"
        if c.startswith("podlab-mesh") or "podlab-mesh" in p.cmd.split(" --config")[0]:
            if pc != "supervisord":
                return "node syncer --check"
            return "node syncer (old: its stop)" if p.seen_before else "node syncer (new)"
        if c in ("supervisord", "etcd", "bird"):
            return f"node {c}"
        if parent and (pc.startswith("podlab-agent") or "podlab-agent" in parent.cmd):
            return f"node agent's {c}"
        return f"node {c}"

    by_kind: dict[str, float] = collections.Counter()
    counts: dict[str, int] = collections.Counter()
    by_node: dict[str, float] = collections.Counter()
    for p in procs.values():
        cpu = used(p)
        if cpu <= 0:
            continue
        where = owner(p)
        named = {"other": "other (not this lab)", "bench": "this bench's sampling"}
        k = named.get(where) or kind(p, where)
        by_kind[k] += cpu
        counts[k] += 1
        by_node[where] += cpu
    accounted = sum(by_kind.values())
    return {
        "ok": child.returncode == 0,
        "tail": out.strip().splitlines()[-3:],
        "wall_s": wall,
        "busy_s": busy,
        "by_kind": dict(by_kind),
        "counts": dict(counts),
        "by_node": dict(by_node),
        "not_in_a_process_s": busy - accounted,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", required=True)
    ap.add_argument(
        "--podlab",
        default=str(Path(sys.executable).parent / "podlab"),
        help="the podlab command to switch with (another tree's, as a shell line: "
        "'env PYTHONPATH=TREE PODLAB_HOME=HERE .venv/bin/python -m harness.cli')",
    )
    ap.add_argument("--modes", default="udp,host-gw")
    ap.add_argument("--label", default="", help="a tag printed and saved with each switch")
    ap.add_argument("--json", type=Path, help="append one JSON line per switch here")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("accton"):
        print("bench_switch_cpu: needs root and accton (apt-get install acct)", file=sys.stderr)
        return 2
    for spec in args.modes.split(","):
        mode, _, enc = spec.partition("+")
        argv = [*shlex.split(args.podlab), "deploy", args.lab, "--switch", "--mode", mode]
        argv += ["--encryption", enc or "none", "--quiet"]
        load = Path("/proc/loadavg").read_text().split()[0]
        res = measure(argv, args.lab)
        res.update(mode=spec, label=args.label, load=load, podlab=args.podlab, at=time.time())
        verdict = "ok" if res["ok"] else "FAILED"
        print(f"{args.label} -> {spec}: {verdict} wall {res['wall_s']:.1f} s, "
              f"busy {res['busy_s']:.1f} CPU-s, load {load}", flush=True)  # fmt: skip
        if not res["ok"]:
            print("\n".join(res["tail"]))
            return 1
        for k, v in sorted(res["by_kind"].items(), key=lambda kv: -kv[1]):
            print(f"    {v:6.2f} s  {res['counts'][k]:4d} proc  {k}")
        rest = res["not_in_a_process_s"]
        print(f"    {rest:6.2f} s        not in a process (irq, softirq, kthreads)")
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
