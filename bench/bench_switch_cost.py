"""Benchmark: a whole-lab mode switch (`podlab deploy LAB --switch`), old code against new.

    .venv/bin/python bench/bench_switch_cost.py --up --old DIR [--rounds 2]
    .venv/bin/python bench/bench_switch_cost.py --lab LAB --old DIR [--rounds 2]
        [--modes host-gw,bgp,calico-vxlan+wireguard,vxlan]

``--up`` brings up its own renamed copy of topologies/two-clusters.clab.yml (lab
``--name``, default ``switch-q``, management ``--mgmt``, default 172.31.242.0/24) and
always takes it down again; ``--lab`` uses a lab that is up. DIR is a checkout of
the code to compare with (``git worktree add --detach /tmp/switch-old 38bcf4f``, the
code before the amendment of ADR 0017). On a quiet 2-core machine ``--up --rounds 2``
takes about 5 minutes (the first deploy about 1, eight switches of 10-20 s, each with its wait).
One wheelhouse is built from this tree and shipped by every step, so both
variants switch agents running the same code and only the switch differs: the
playbooks and the deploy code of each tree (each variant runs in its own Python
process with its tree first on ``PYTHONPATH``). First a full deploy puts the lab
into the first mode; then each step switches the whole lab to the next mode of
the cycle, and waits until every cluster node's agent has written a heartbeat
*after the switch began* in the new mode and every node has a route to every
peer's pod subnet (what a conformance entry waits for before its checks).

Variants alternate ABBA, BAAB …, so over two rounds each variant makes every
transition of a four-mode cycle once, and a neighbour's burst lands on both.
Prints each step (deploy seconds, the wait, the sum, the load average and where
the deploy's seconds went, from the event log) and per variant the median, min
and max of the sum and of the deploy alone, and the ratio new/old of the medians.
Each step also says, host by host: when the agents' service calls (restart and
readiness wait) and the syncers' ran, from the event log; per agent, how long after
its process started it wrote its first heartbeat and the CPU it had used by then (its
log's "ready in mode" line); and the CPU the machine spent during the step (all of
it, from /proc/stat, and the deploy's own processes on the controller side:
ansible-playbook, its workers, ssh), since on two cores six agents starting at once
are bound by CPU. Asserts nothing on time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path


def one_switch(spec: str) -> int:
    """In the variant's own process (its tree first on sys.path): one switch, as JSON."""
    from harness.deploy.deploy import deploy, request_for
    from harness.deploy.wheel import Wheelhouse

    args = json.loads(spec)
    wh = args["wheelhouse"]
    wheelhouse = Wheelhouse(
        digest=wh["digest"],
        path=Path(wh["path"]),
        archive=Path(wh["archive"]),
        wheel=wh["wheel"],
        requirements=tuple(wh["requirements"]),
        pip_wheel=wh["pip_wheel"],
    )
    over = {"podlab_mode": args["mode"], "podlab_encryption": args["encryption"]}
    req = request_for(args["lab"], None, over, switch=args["switch"])
    t0 = time.monotonic()
    res = deploy(req, wheelhouse=wheelhouse)
    wall = time.monotonic() - t0
    print(
        json.dumps(
            {
                "ok": res.ok,
                "wall_s": wall,
                "ansible_s": res.duration_s,
                "artifacts": str(res.artifacts),
                "failures": [str(f) for f in res.failures],
                "source": str(Path(sys.modules["harness"].__file__ or "").parent),
            }
        )
    )
    return 0 if res.ok else 1


def run_variant(tree: Path, lab: str, spec: object, switch: bool, wheelhouse: object) -> dict:
    """One deploy in a fresh Python process running ``tree``'s code; its JSON answer."""
    from harness.inventory import project_home

    arg = json.dumps(
        {
            "lab": lab,
            "mode": spec.mode,  # type: ignore[attr-defined]
            "encryption": spec.encryption,  # type: ignore[attr-defined]
            "switch": switch,
            "wheelhouse": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(wheelhouse).items()  # type: ignore[call-overload]
            },
        }
    )
    env = {**os.environ, "PYTHONPATH": str(tree), "PODLAB_HOME": str(project_home())}
    t0 = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--one", arg],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tree),
        timeout=1800,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"{tree}: no answer (rc={proc.returncode}): {proc.stderr[-2000:]}")
    out: dict = json.loads(lines[-1])
    out["process_s"] = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["controller_cpu_s"] = (after.ru_utime + after.ru_stime) - (
        before.ru_utime + before.ru_stime
    )
    return out


def busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat: not idle or
    iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


READY = re.compile(
    r"ready in mode (?P<mode>\S+): first heartbeat (?P<age>[\d.]+) s after the process "
    r"started, (?P<startup>[\d.]+) s after its start-up began \((?P<cpu>[\d.]+) s CPU"
)


STOPPED = re.compile(r"stopped; pods, routes and devices left in place \((?P<s>[\d.]+) s after")
AGENT_LOG = "/var/log/podlab/podlab-agent.log"


def agents_ready(lab: object, nodes: dict) -> dict[str, tuple[float, float, float, float]]:
    """Per cluster node, from its agent's log: the last "ready in mode" line (seconds from
    its process start to the first heartbeat, of which its own start-up, CPU seconds by
    then) and the last stop's seconds from the signal to the end (the old agent's)."""
    out = {}
    grep = f"grep -E 'ready in mode|after the signal' {AGENT_LOG} | tail -n 4"
    for cluster in lab.clusters:  # type: ignore[attr-defined]
        for node in lab.plan.cluster_nodes(cluster):  # type: ignore[attr-defined]
            lines = nodes[node.name].run(["sh", "-c", grep], 15).stdout.splitlines()
            ready = [m for ln in lines if (m := READY.search(ln))]
            stops = [m for ln in lines if (m := STOPPED.search(ln))]
            if ready:
                m = ready[-1]
                stop = float(stops[-1]["s"]) if stops else float("nan")
                out[node.name] = (float(m["age"]), float(m["startup"]), float(m["cpu"]), stop)
    return out


def restart_split(events: list[dict], prefix: str) -> list[tuple[float, float]]:
    """Per host that restarted a service (task name ``prefix``…): (seconds from the task's
    start to the moment the old process was gone — the module's ``since`` —, seconds from
    then to the task's end: the new process's start-up and the readiness wait)."""
    out = []
    for e in events:
        data = e.get("event_data") or {}
        since = (data.get("res") or {}).get("since") or 0.0
        if e.get("event") != "runner_on_ok" or not str(data.get("task", "")).startswith(prefix):
            continue
        if since and data.get("start") and data.get("end"):
            start = datetime.fromisoformat(data["start"]).timestamp()
            end = datetime.fromisoformat(data["end"]).timestamp()
            out.append((float(since) - start, end - float(since)))
    return out


def spread(values: list[float]) -> str:
    return f"{min(values):4.2f}–{max(values):4.2f}" if values else "-"


def wait_switched(lab: object, spec: object, began: float, nodes: dict, timeout_s: float = 120):
    """Every cluster node's agent wrote a heartbeat after ``began`` (epoch) in ``spec``'s
    mode, then every node routes to every peer pod subnet (labctl.wait_pod_routes)."""
    from harness.conformance import labctl

    deadline = time.monotonic() + timeout_s
    while True:
        missing = []
        for cluster in lab.clusters:  # type: ignore[attr-defined]
            records = {n.name: n for n in lab.client(cluster).nodes()}  # type: ignore[attr-defined]
            for node in lab.plan.cluster_nodes(cluster):  # type: ignore[attr-defined]
                rec = records.get(node.name)
                beat = _epoch(rec.heartbeat) if rec else 0.0
                if rec is None or beat < began or rec.mode != spec.mode:  # type: ignore[attr-defined]
                    missing.append(node.name)
        if not missing:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"agents not switched to {spec} after {timeout_s:.0f} s: {missing}")
        time.sleep(0.1)
    labctl.wait_pod_routes(lab, nodes)  # type: ignore[arg-type]


def _epoch(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--lab", help="a lab that is up (deployed or not)")
    ap.add_argument("--up", action="store_true", help="bring up (and down) a copy of two-clusters")
    ap.add_argument("--old", type=Path, help="checkout of the code to compare with")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of 4 steps (default 2)")
    ap.add_argument("--modes", default="host-gw,bgp,calico-vxlan+wireguard,vxlan")
    ap.add_argument("--name", default=UP_LAB, help=f"--up: the lab's name (default {UP_LAB})")
    ap.add_argument("--mgmt", default=UP_SUBNET, help=f"--up: its management subnet ({UP_SUBNET})")
    args = ap.parse_args()
    if args.one:
        return one_switch(args.one)
    if not (args.lab or args.up) or not args.old:
        ap.error("--old and one of --lab, --up are required")
    if args.up:
        import tempfile

        from harness.testlab.deploylab import lab_up

        with (
            tempfile.TemporaryDirectory(prefix="podlab-bench-") as tmp,
            lab_up("two-clusters", args.name, args.mgmt, Path(tmp)),
        ):
            return compare(args.name, args)
    return compare(args.lab, args)


UP_LAB = "switch-q"
UP_SUBNET = "172.31.242.0/24"


def compare(lab_name: str, args: argparse.Namespace) -> int:
    """Full deploy into the first mode, then the interleaved switches; prints the figures."""
    from harness.conformance import labctl, remote
    from harness.conformance.modes import ModeSpec
    from harness.deploy.deploy import source_root, wheelhouse_cache
    from harness.deploy.timeline import (
        format_spans,
        format_timeline,
        host_spans,
        load_events,
        timeline,
    )
    from harness.deploy.wheel import ensure_wheelhouse

    new = source_root()
    trees = {"old": args.old.resolve(), "new": new}
    modes = [ModeSpec.parse(m) for m in args.modes.split(",")]
    lab = labctl.attach(lab_name)
    wheelhouse = ensure_wheelhouse(new, wheelhouse_cache())
    nodes = remote.connect_lab(lab.plan, lab.ssh_config, lab.lab_dir)
    print(f"cpus={os.cpu_count()} wheelhouse {wheelhouse.digest[:12]}; trees {trees}", flush=True)
    first = run_variant(new, lab_name, modes[0], False, wheelhouse)
    if not first["ok"]:
        print(f"first deploy failed: {first['failures']}")
        return 1
    wait_switched(lab, modes[0], 0.0, nodes)
    print(f"full deploy into {modes[0]}: {first['wall_s']:.1f} s", flush=True)
    sums: dict[str, list[float]] = {"old": [], "new": []}
    deploys: dict[str, list[float]] = {"old": [], "new": []}
    step = 0
    for r in range(args.rounds):
        order = ["old", "new", "new", "old"] if r % 2 == 0 else ["new", "old", "old", "new"]
        for variant in order:
            step += 1
            spec = modes[step % len(modes)]
            load = Path("/proc/loadavg").read_text().split()[0]
            began = time.time()
            cpu0 = busy_s()
            res = run_variant(trees[variant], lab_name, spec, True, wheelhouse)
            cpu_deploy = busy_s() - cpu0
            if not res["ok"]:
                print(f"{variant} -> {spec}: switch failed: {res['failures']}")
                return 1
            t1 = time.monotonic()
            wait_switched(lab, spec, began, nodes)
            ready = time.monotonic() - t1
            total = res["wall_s"] + ready
            sums[variant].append(total)
            deploys[variant].append(res["wall_s"])
            print(f"{variant:3s} -> {spec!s:24s} deploy {res['wall_s']:5.1f} s  "
                  f"ready {ready:4.1f} s  sum {total:5.1f} s  "
                  f"(process {res['process_s']:5.1f} s)  load {load}",
                  flush=True)  # fmt: skip
            events = load_events(Path(res["artifacts"]))
            split = timeline(events)
            outside = res["ansible_s"] - split.total_s
            print(f"      ansible-playbook start-up and exit (outside its events) {outside:4.1f} s")
            for line in format_timeline(split, top=6):
                print(f"      {line}")
            for label, prefix in (("agents", "Run podlab-agent under"),
                                  ("syncers", "Run podlab-mesh under")):  # fmt: skip
                print(f"      {format_spans(label, host_spans(events, prefix))}")
            for label, prefix in (("agents", "Run podlab-agent under"),
                                  ("syncers", "Run podlab-mesh under")):  # fmt: skip
                split_ = restart_split(events, prefix)
                print(f"      {label}' service calls: old process gone "
                      f"{spread([a for a, _ in split_])} s after the call began, then "
                      f"{spread([b for _, b in split_])} s to ready")  # fmt: skip
            ready_lines = agents_ready(lab, nodes)
            ages = [r[0] for r in ready_lines.values()]
            own = [r[1] for r in ready_lines.values()]
            cpus = [r[2] for r in ready_lines.values()]
            stops = [r[3] for r in ready_lines.values()]
            print(f"      agents ({len(ready_lines)}): the old one stopped {spread(stops)} s "
                  f"after the signal; the new one's first heartbeat {spread(ages)} s after "
                  f"its process started ({spread(own)} s of it its start-up), CPU by then "
                  f"{spread(cpus)} s, {sum(cpus):4.1f} s in all")  # fmt: skip
            print(f"      CPU during the deploy: {cpu_deploy:5.1f} s machine-wide "
                  f"({cpu_deploy / max(res['wall_s'], 0.1):3.2f} cores), of which the deploy's "
                  f"controller side {res['controller_cpu_s']:4.1f} s")  # fmt: skip
    for variant in ("old", "new"):
        s, d = sums[variant], deploys[variant]
        print(f"{variant}: n={len(s)} deploy+ready median {statistics.median(s):.1f} s "
              f"(min {min(s):.1f}, max {max(s):.1f}); deploy alone median "
              f"{statistics.median(d):.1f} s (min {min(d):.1f}, max {max(d):.1f})")  # fmt: skip
    ratio = statistics.median(sums["new"]) / statistics.median(sums["old"])
    dratio = statistics.median(deploys["new"]) / statistics.median(deploys["old"])
    print(f"new / old (medians): deploy+ready {ratio:.2f}, deploy alone {dratio:.2f}; "
          f"load now {Path('/proc/loadavg').read_text().split()[0]}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
