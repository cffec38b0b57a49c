"""The seeds' bandwidth order in a VM lab: host > Calico BGP ≈ IPIP > Flannel VXLAN > Flannel UDP.

``.venv/bin/python bench/bench_vm_order.py --lab LAB [--rounds 3] [--seconds 5] [--reps 2]
[--modes host-gw,bgp,ipip,vxlan,udp]``

LAB is a VM lab that is up and deployed (``podlab up FILE --backend vm``;
``podlab deploy LAB``), with kernel IPIP in its guests (``tunl0``: the netns
backend's host kernel has no ``ipip`` module, so its IPIP is a userspace
stand-in). Each round visits every mode once, in an order rotated per round
(``harness.refpath.rounds.interleave``; the visit is ``harness.conformance.order``'s,
which scenario 37 also uses): switch the lab to the mode
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
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.conformance import labctl, order, remote  # noqa: E402
from harness.conformance.modes import ModeSpec  # noqa: E402
from harness.lab.state import Ledger, find  # noqa: E402
from harness.probes.stats import coefficient_of_variation  # noqa: E402


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _spread(values: Sequence[float]) -> str:
    cv = coefficient_of_variation(values)
    return (f"CV {cv * 100:.0f} %" if cv is not None else "CV n/a") + (
        f", {min(values):.3g}–{max(values):.3g}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", required=True, help="a VM lab that is up and deployed")
    ap.add_argument("--modes", default=order.MODES)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 seconds per measurement")
    ap.add_argument("--reps", type=int, default=2, help="pod→pod/node→node pairs per visit")
    ap.add_argument("--approx", type=float, default=order.APPROX)
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
            for spec in [specs[(i + r) % len(specs)] for i in range(len(specs))]:
                before = load()
                v = order.visit(lab, nodes, spec, args.seconds, args.reps)
                p, n = statistics.median(v.pod_bps), statistics.median(v.node_bps)
                per_mode[str(spec)].append(p)
                ratios[str(spec)].append(p / n)
                hosts.append(n)
                row[order.row_key(spec)] = p / n
                print(f"{tag}round {r + 1} {spec!s:9s} switch+ready {v.switch_s:6.1f} s  "
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
    for relation, held, judged in order.verdict(rounds, args.approx):
        print(f"{tag}seeds' {relation}: held in {held}/{judged} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
