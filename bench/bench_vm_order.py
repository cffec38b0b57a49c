"""The seeds' bandwidth order in a VM lab: host > Calico BGP ≈ IPIP > Flannel VXLAN > Flannel UDP.

``.venv/bin/python bench/bench_vm_order.py --lab LAB [--rounds 3] [--seconds 5] [--reps 2]
[--modes host-gw,bgp,ipip,vxlan,udp]``

LAB is a VM lab that is up and deployed (``podlab up FILE --backend vm``;
``podlab deploy LAB``), with kernel IPIP in its guests (``tunl0``: the netns
backend's host kernel has no ``ipip`` module, so its IPIP is a userspace
stand-in). Each round visits every mode once, in an order rotated per round
(``harness.refpath.rounds.interleave``): switch the lab to the mode
(``podlab deploy --switch``, playbooks/switch.yml), wait for Ready agents and
peer pod routes, make one pod on each of the first two guests, then ``--reps``
times pod→pod and node→node (the underlay, "host" in the seeds) alternately,
``--seconds`` of one TCP stream each. Node→node is measured inside every visit,
so each mode is judged by its ratio to the host path of the same minutes.

Prints every measurement with the load average, per mode the median pod→pod
and the median ratio to node→node with their spread (CV, min–max), and for each
relation of the seeds' order the rounds in which it held. ``≈`` holds when the
two medians of the round are within ``--approx`` (10 %) of the larger.

Emulated guests (TCG: no usable KVM, the accelerator is printed per node): every
path — the underlay too — is bound by the emulated guest CPU, and qemu's
virtio-net runs in userspace on the same two cores; the figures are marked
EMULATED and say which path costs more guest instructions per byte, not what
the datapaths deliver. They are never to be compared with native figures.
Asserts nothing; exit 0 when every measurement ran.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.conformance import labctl, pods, remote  # noqa: E402
from harness.conformance.modes import ModeSpec  # noqa: E402
from harness.lab.state import Ledger, find  # noqa: E402
from harness.probes import iperf3  # noqa: E402
from harness.probes.stats import coefficient_of_variation  # noqa: E402
from harness.refpath.rounds import interleave  # noqa: E402

MODES = "host-gw,bgp,ipip,vxlan,udp"
# The seeds' order, as (left, relation, right): ">" strictly more, "≈" within --approx.
SEEDS_ORDER = (("host", ">", "bgp"), ("bgp", "≈", "ipip"), ("ipip", ">", "vxlan"),
               ("vxlan", ">", "udp"))  # fmt: skip
POD_PORT, NODE_PORT = 5301, 5302


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def holds(a: float, relation: str, b: float, approx: float) -> bool:
    """Whether ``a relation b`` holds (``≈``: within ``approx`` of the larger)."""
    if relation == "≈":
        return abs(a - b) <= approx * max(a, b)
    return a > b


def order_verdict(
    rounds: Sequence[Mapping[str, float]], approx: float = 0.10
) -> list[tuple[str, int, int]]:
    """Per relation of the seeds' order: (``"host > bgp"``, rounds it held in, rounds judged).

    ``rounds`` holds per round each mode's pod→pod throughput as a ratio to the
    node→node of its own visit, and ``"host": 1.0``; a relation is judged only in
    rounds that measured both sides.
    """
    out = []
    for left, rel, right in SEEDS_ORDER:
        judged = [r for r in rounds if left in r and right in r]
        held = sum(1 for r in judged if holds(r[left], rel, r[right], approx))
        out.append((f"{left} {rel} {right}", held, len(judged)))
    return out


def _server(port: int) -> list[str]:
    """A persistent iperf3 server that writes its pid (it is stopped by that pid)."""
    return ["sh", "-c", f"echo $$ > /run/bench-order-{port}.pid; exec iperf3 -s -p {port}"]


def _visit(
    lab: Any, nodes: dict[str, remote.Node], spec: ModeSpec, seconds: int, reps: int
) -> tuple[list[float], list[float], float]:
    """Switch to ``spec``; ``reps`` × (pod→pod, node→node) alternately; both, switch s."""
    t0 = time.monotonic()
    if labctl.current_mode(lab) != spec:
        labctl.deploy(lab, spec, switch=True)
    labctl.wait_nodes_ready(lab, spec, timeout_s=600)
    labctl.wait_pod_routes(lab, nodes, timeout_s=300)
    switch_s = time.monotonic() - t0
    a_name, b_name = list(nodes)[:2]
    factory = pods.PodFactory(lab.client(), nodes)
    a, b = factory.create([a_name, b_name], prefix="order", wait_s=600)
    life = int(reps * 2 * (seconds + 60) + 120)
    try:
        b.node.start(["ip", "netns", "exec", b.netns, *_server(POD_PORT)], life)
        nodes[b_name].start(_server(NODE_PORT), life)
        time.sleep(3)
        node_b_ip = nodes[b_name].underlay_ip

        def measure(target: str, port: int, in_pod: bool) -> float:
            argv = iperf3.client_command(target, port, seconds)
            for _ in range(3):  # a server still finishing the previous test answers busy
                res = a.run(argv, seconds + 90) if in_pod else nodes[a_name].run(argv, seconds + 90)
                try:
                    return iperf3.parse(res.stdout or res.stderr).received_bps
                except iperf3.IperfError as exc:
                    err = exc
                    time.sleep(1)
            raise RuntimeError(f"{spec} iperf3 to {target}:{port}: {err}")

        got = interleave(
            [("pod", lambda: measure(b.ip, POD_PORT, True)),
             ("node", lambda: measure(node_b_ip, NODE_PORT, False))], reps)  # fmt: skip
    finally:
        factory.delete_all(wait_s=300)
        for port in (POD_PORT, NODE_PORT):  # by the pids they wrote, in the guest
            pidfile = f"/run/bench-order-{port}.pid"
            nodes[b_name].run(["sh", "-c", f"kill $(cat {pidfile}) 2>/dev/null; rm -f {pidfile}"])
    return got["pod"], got["node"], switch_s


def _spread(values: Sequence[float]) -> str:
    cv = coefficient_of_variation(values)
    return (f"CV {cv * 100:.0f} %" if cv is not None else "CV n/a") + (
        f", {min(values):.3g}–{max(values):.3g}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", required=True, help="a VM lab that is up and deployed")
    ap.add_argument("--modes", default=MODES)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 seconds per measurement")
    ap.add_argument("--reps", type=int, default=2, help="pod→pod/node→node pairs per visit")
    ap.add_argument("--approx", type=float, default=0.10)
    args = ap.parse_args()
    specs = [ModeSpec.parse(m) for m in args.modes.split(",")]
    lab = labctl.attach(args.lab)
    ledger = Ledger.load(find(args.lab))
    names = [n.name for n in lab.cluster_nodes()][:2]
    nodes = remote.connect_lab(lab.plan, lab.ssh_config, lab.lab_dir, names)
    accels = {}
    for name, node in nodes.items():
        accels[name] = ledger.nodes[name].vm_accel or "none (netns)"
        kernel = node.check(["uname", "-r"]).stdout.strip()
        print(f"node {name}: accel {accels[name]}, kernel {kernel}")
    emulated = any(a == "tcg" for a in accels.values())
    tag = "EMULATED (TCG) " if emulated else ""
    if emulated:
        print("EMULATED guests: every path is bound by the emulated CPU; these figures "
              "show relative guest cost per byte only; never compare with native")  # fmt: skip
    print(f"modes {[str(s) for s in specs]}, {args.rounds} rounds × {args.reps} pairs × "
          f"{args.seconds} s; load {load()}", flush=True)  # fmt: skip
    per_mode: dict[str, list[float]] = {str(s): [] for s in specs}
    ratios: dict[str, list[float]] = {str(s): [] for s in specs}
    host: list[float] = []
    rounds: list[dict[str, float]] = []
    try:
        for r in range(args.rounds):
            row: dict[str, float] = {}
            hosts: list[float] = []
            order = [specs[(i + r) % len(specs)] for i in range(len(specs))]
            for spec in order:
                before = load()
                pod_bps, node_bps, switch_s = _visit(lab, nodes, spec, args.seconds, args.reps)
                p, n = statistics.median(pod_bps), statistics.median(node_bps)
                per_mode[str(spec)].append(p)
                ratios[str(spec)].append(p / n)
                hosts.append(n)
                row[spec.mode if spec.encryption == "none" else str(spec)] = p / n
                print(f"{tag}round {r + 1} {spec!s:9s} switch+ready {switch_s:6.1f} s  "
                      f"pod→pod {p / 1e6:8.1f} Mbit/s  node→node {n / 1e6:8.1f} Mbit/s  "
                      f"ratio {p / n:.3f}  (each a median of {args.reps}); load {before} → "
                      f"{load()}", flush=True)  # fmt: skip
            row["host"] = 1.0  # each mode is its ratio to the node→node of its own visit
            host += hosts
            rounds.append(row)
    finally:
        for node in nodes.values():
            node.close()
    print(f"\n== {tag}medians over {args.rounds} rounds (load {load()})")
    print(f"host (node→node, every visit) {statistics.median(host) / 1e6:8.1f} Mbit/s "
          f"({_spread(host)})")  # fmt: skip
    for name, values in per_mode.items():
        print(f"{name:9s} pod→pod {statistics.median(values) / 1e6:8.1f} Mbit/s ({_spread(values)}"
              f"); ratio to node→node {statistics.median(ratios[name]):.3f} "
              f"({_spread(ratios[name])})")  # fmt: skip
    ranked = sorted(per_mode, key=lambda m: -statistics.median(ratios[m]))
    print(f"{tag}measured order (by median ratio to node→node): host > " + " > ".join(ranked))
    for relation, held, judged in order_verdict(rounds, args.approx):
        print(f"{tag}seeds' {relation}: held in {held}/{judged} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
