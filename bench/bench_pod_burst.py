"""Pods applied at once: apply → network-ready, per pod, p50/p99 (issue 15's burst).

``sudo .venv/bin/python bench/bench_pod_burst.py [--pods 100] [--nodes 1] [--mode vxlan]
[--rounds 3] [--agent-src DIR]``

A throwaway lab (harness/testlab/agentlab.py): ``--nodes`` nodes take the pods and one
more node probes them. All pods (``sleep infinity``, as the conformance SLO test
uses) are written to etcd in one transaction, spread over the pod nodes as
podlab's scheduler would. For each pod: the agent's ``networkReadyTime`` minus
the apply, and the first TCP answer (a RST counts: nothing listens, a refusal
proves the path) from the probing node's namespace, retried every 20 ms once the
pod's address is published. Prints p50/p90/p99/max per round and over all rounds,
and the CPU each pod cost (load-independent, unlike the latencies on a shared
machine): the agents' own time plus the children they reaped (plugin
processes), each pod's process chain (nsenter … its command), and etcd's.

``--direct`` makes the agents call podlab-cni's handler in-process instead of
executing the plugin (bench/direct_hook): the difference is what executing the
plugin costs. ``--agent-src DIR`` runs the agents from another source tree (e.g. ``git archive
main | tar -x -C /tmp/main``) so a before/after comparison runs on the same
machine in the same session; the lab's agent.yaml then omits the settings that
tree does not know (``cni_*``).

``--ab-workers A,B`` compares two ``pod_workers`` settings side by side in one
lab: rounds alternate A, B, A, B … (the pod nodes' agents are restarted with
the other setting between rounds, on an empty node), and each pair of rounds
gives a ratio B ÷ A of the p50 and p99 (apply → reached); ``1,16`` is the
agent setting pods up one after another against its default pool.
``--ab-src DIR`` alternates the same way between the agent of another source
tree (A, e.g. ``git archive main | tar -x -C /tmp/old``) and this tree's (B).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from harness.store.keys import pod_key
from harness.testlab.agentlab import PYTHON, AgentLab
from harness.testlab.wait import wait_for

# Reads "name ip" lines; for each, retries a TCP connect to port 9 every 20 ms and
# prints "name <epoch seconds>" once it is accepted or refused (the path works).
PROBER = r"""
import socket, sys, threading, time
lock = threading.Lock()
def probe(name, ip):
    while True:
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect((ip, 9))
            ok = True
        except ConnectionRefusedError:
            ok = True
        except OSError:
            ok = False
        finally:
            s.close()
        if ok:
            t = time.time()
            with lock:
                sys.stdout.write(f"{name} {t!r}\n"); sys.stdout.flush()
            return
        time.sleep(0.02)
for line in sys.stdin:
    name, ip = line.split()
    threading.Thread(target=probe, args=(name, ip), daemon=True).start()
time.sleep(3600)
"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def ts(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def loadavg() -> str:
    return Path("/proc/loadavg").read_text()


def line(label: str, vals: list[float]) -> str:
    return (
        f"{label:22} p50 {pct(vals, 50):.3f} s  p90 {pct(vals, 90):.3f} s  "
        f"p99 {pct(vals, 99):.3f} s  max {max(vals):.3f} s  mean {statistics.mean(vals):.3f} s"
    )


def pod_object(name: str, node: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}-{time.time()}"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "command": ["sleep", "infinity"]}]},
    }


TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, children: bool = True) -> float:
    """CPU seconds of a process (with the children it reaped), 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def pod_pids(node) -> list[int]:  # type: ignore[no-untyped-def]
    out = []
    for f in (node.dir / "state" / "pods").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            out.append(int(json.loads(f.read_text())["pid"]))
    return out


def one_round(lab: AgentLab, names: list[str], pod_nodes: list, prober_node) -> tuple:
    prober = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{prober_node.ns}", PYTHON, "-c", PROBER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    answered: dict[str, float] = {}

    def read() -> None:
        assert prober.stdout is not None
        for ln in prober.stdout:
            parts = ln.split()
            if len(parts) == 2:
                answered[parts[0]] = float(parts[1])

    threading.Thread(target=read, daemon=True).start()
    items = [
        (pod_key("t1", "default", n), json.dumps(pod_object(n, pod_nodes[i % len(pod_nodes)].name)))
        for i, n in enumerate(names)
    ]
    agents = [n.proc.pid for n in pod_nodes if n.proc is not None]
    etcd = lab.etcd.pid if lab.etcd is not None else 0
    cpu0 = (sum(cpu_s(p) for p in agents), cpu_s(etcd, children=False))
    applied = time.time()
    lab.store.put_many(items)
    sent: set[str] = set()

    def poll() -> bool:
        assert prober.stdin is not None
        for kv in lab.store.get_prefix("/podlab/v1/t1/podstatus/default/")[0]:
            name, st = kv.key.rsplit("/", 1)[1], kv.json()
            if name in names and name not in sent and st.get("podIP"):
                prober.stdin.write(f"{name} {st['podIP']}\n")
                prober.stdin.flush()
                sent.add(name)
        return len(answered) == len(names)

    wait_for("every pod answering", poll, timeout=180, every=0.05)
    prober.kill()
    prober.wait()
    reach = [answered[n] - applied for n in names]
    net = [ts(lab.pod_status(n)["networkReadyTime"]) - applied for n in names]
    cpu = {
        "agent+plugin": sum(cpu_s(p) for p in agents) - cpu0[0],
        "pod processes": sum(cpu_s(p) for n in pod_nodes for p in pod_pids(n)),
        "etcd": cpu_s(etcd, children=False) - cpu0[1],
    }
    # delete them all and wait until every status is gone (the node is clean again)
    for key, _ in items:
        lab.store.delete(key)
    wait_for(
        "pods removed",
        lambda: not lab.store.get_prefix("/podlab/v1/t1/podstatus/default/")[0],
        timeout=180,
        every=0.2,
    )
    return reach, net, cpu


def set_workers(lab: AgentLab, pod_nodes: list, workers: int) -> None:  # type: ignore[type-arg]
    """Restart the pod nodes' agents with ``pod_workers: workers`` (their nodes are empty)."""
    for n in pod_nodes:
        lab.stop_agent(n)
        cfg = yaml.safe_load((n.dir / "agent.yaml").read_text())
        cfg["pod_workers"] = workers
        (n.dir / "agent.yaml").write_text(yaml.safe_dump(cfg))
        lab.start_agent(n)
    for n in pod_nodes:
        lab.wait_node(n)
    time.sleep(1.0)  # the restarted agents' first full pass


def set_src(lab: AgentLab, pod_nodes: list, src: Path | None) -> None:  # type: ignore[type-arg]
    """Restart the pod nodes' agents from ``src`` (None: this tree); their nodes are empty."""
    for n in pod_nodes:
        lab.stop_agent(n)
        n.src = src
        lab.start_agent(n)
    for n in pod_nodes:
        lab.wait_node(n)
    time.sleep(1.0)


def arms_of(lab: AgentLab, pod_nodes: list, workers: list[int], src: Path | None) -> dict:  # type: ignore[type-arg]
    """The two arms (label → how to switch the agents to it), A first."""
    if src is not None:
        old = src.resolve()
        return {f"agent of {old}": lambda: set_src(lab, pod_nodes, old),
                "this tree's agent": lambda: set_src(lab, pod_nodes, None)}  # fmt: skip
    return {f"pod_workers {w}": (lambda w=w: set_workers(lab, pod_nodes, w)) for w in workers}


def ab_rounds(lab: AgentLab, pod_nodes: list, prober, arms: dict, pairs: int,  # type: ignore[type-arg]
              pods: int) -> None:  # fmt: skip
    """``pairs`` × (a round in each arm); per-arm figures and ratios B ÷ A per pair."""
    labels = list(arms)
    got: dict[str, list[float]] = {a: [] for a in labels}
    ratios: dict[int, list[float]] = {50: [], 99: []}
    for r in range(pairs):
        order = labels if r % 2 == 0 else labels[::-1]  # neither arm always goes first
        this: dict[str, list[float]] = {}
        for k, a in enumerate(order):
            arms[a]()
            names = [f"b{r}a{k}-{i:03d}" for i in range(pods)]
            reach, net, cpu = one_round(lab, names, pod_nodes, prober)
            this[a] = reach
            got[a] += reach
            per_pod = ", ".join(f"{k} {v / pods * 1000:.1f}" for k, v in cpu.items())
            print(f"pair {r + 1}, {a}: load {loadavg()}", end="")
            print("  " + line("apply→reached", reach))
            print("  " + line("apply→networkReady", net))
            print(f"  CPU per pod (ms): {per_pod}")
        for q in (50, 99):
            ratios[q].append(pct(this[labels[1]], q) / pct(this[labels[0]], q))
    print(f"all {pairs} pairs ({pods} pods per round):")
    for a in labels:
        print(f"  {a}:")
        print("  " + line("apply→reached", got[a]))
    for q in (50, 99):
        vals = ratios[q]
        print(f"  p{q} ratio ({labels[1]}) ÷ ({labels[0]}): median {statistics.median(vals):.2f} "
              f"(min {min(vals):.2f}, max {max(vals):.2f}; per pair "
              f"{', '.join(f'{v:.2f}' for v in vals)})")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=1, help="nodes that take the pods")
    ap.add_argument("--mode", default="vxlan")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--agent-src", type=Path, help="run the agents from this source tree")
    ap.add_argument("--direct", action="store_true",
                    help="agents call the handler in-process (no plugin process)")  # fmt: skip
    ap.add_argument(
        "--ab-workers",
        metavar="A,B",
        help="alternate rounds between two pod_workers settings (e.g. 1,16)",
    )
    ap.add_argument(
        "--ab-src",
        type=Path,
        metavar="DIR",
        help="alternate rounds between DIR's agent (A) and this tree's (B)",
    )
    args = ap.parse_args()
    if args.ab_src and (args.ab_workers or args.agent_src or args.direct):
        ap.error("--ab-src combines with none of --ab-workers, --agent-src, --direct")
    arms: list[int] = []
    if args.ab_workers:
        try:
            arms = [int(x) for x in args.ab_workers.split(",")]
        except ValueError:
            arms = []
        if len(arms) != 2 or min(arms) < 1:
            ap.error(f"--ab-workers {args.ab_workers}: give two pod_workers counts, e.g. 1,16")
    if args.direct and args.agent_src:
        ap.error("--direct and --agent-src do not combine (--direct is this tree's agent)")
    lab = AgentLab(args.nodes + 1, args.mode, tmp_root="/dev/shm", resync_s=10.0)
    try:
        if args.agent_src:
            lab.agent_src = args.agent_src.resolve()
            for n in lab.nodes:  # an older agent refuses settings it does not know
                cfg = {k: v for k, v in n.cfg.items() if not k.startswith("cni_")}
                (n.dir / "agent.yaml").write_text(yaml.safe_dump(cfg))
        if args.direct:
            hook = Path(__file__).resolve().parent / "direct_hook"
            lab.agent_env = {"PODLAB_BENCH_DIRECT": "1", "PYTHONPATH": str(hook)}
        for n in lab.nodes:
            lab.start_agent(n)
        for n in lab.nodes:
            lab.wait_node(n)
        *pod_nodes, prober_node = lab.nodes
        src = str(args.agent_src) if args.agent_src else "this tree"
        src += " (plugin handler in-process, --direct)" if args.direct else ""
        print(
            f"agent from {src}; mode {args.mode}; {args.pods} pods at once on "
            f"{args.nodes} node(s), probed from another; load {loadavg()}",
            end="",
        )
        if arms or args.ab_src:
            ab_rounds(lab, pod_nodes, prober_node, arms_of(lab, pod_nodes, arms, args.ab_src),
                      args.rounds, args.pods)  # fmt: skip
            print(f"load after: {loadavg()}", end="")
            return 0
        all_reach: list[float] = []
        all_net: list[float] = []
        for r in range(args.rounds):
            names = [f"b{r}-{i:03d}" for i in range(args.pods)]
            reach, net, cpu = one_round(lab, names, pod_nodes, prober_node)
            print(f"round {r + 1}:")
            print("  " + line("apply→reached", reach))
            print("  " + line("apply→networkReady", net))
            per_pod = ", ".join(f"{k} {v / args.pods * 1000:.1f}" for k, v in cpu.items())
            print(f"  CPU per pod (ms): {per_pod}")
            all_reach += reach
            all_net += net
        print(f"all {args.rounds} rounds ({len(all_reach)} pods):")
        print("  " + line("apply→reached", all_reach))
        print("  " + line("apply→networkReady", all_net))
        print(f"load after: {loadavg()}", end="")
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
