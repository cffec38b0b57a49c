"""The seeds' bandwidth order: host > Calico BGP ≈ IPIP > Flannel VXLAN > Flannel UDP.

Shared by scenario 37's check (``suites/test_kernel.py``, one round, judged) and
``bench/bench_vm_order.py`` (rounds, printed). A visit switches the lab to a mode
(``podlab deploy --switch``), waits for Ready agents and peer pod routes, makes one
pod on each of the first two nodes and measures pod→pod and node→node (the
underlay: "host" in the seeds) alternately, so each mode is judged by its ratio to
the host path of the same minutes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.conformance import labctl, pods, remote
from harness.conformance.modes import ModeSpec
from harness.probes import iperf3
from harness.refpath.rounds import interleave

MODES = "host-gw,bgp,ipip,vxlan,udp"
# The seeds' order, as (left, relation, right): ">" strictly more, "≈" within ``approx``.
SEEDS_ORDER = (("host", ">", "bgp"), ("bgp", "≈", "ipip"), ("ipip", ">", "vxlan"),
               ("vxlan", ">", "udp"))  # fmt: skip
POD_PORT, NODE_PORT = 5301, 5302
APPROX = 0.10


def holds(a: float, relation: str, b: float, approx: float = APPROX) -> bool:
    """Whether ``a relation b`` holds (``≈``: within ``approx`` of the larger)."""
    if relation == "≈":
        return abs(a - b) <= approx * max(a, b)
    return a > b


def verdict(
    rounds: Sequence[Mapping[str, float]], approx: float = APPROX
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


@dataclass(frozen=True)
class Visit:
    """One mode's visit: ``reps`` pod→pod and node→node figures (bit/s), switch + ready s."""

    spec: ModeSpec
    pod_bps: list[float]
    node_bps: list[float]
    switch_s: float


def _server(port: int) -> list[str]:
    """A persistent iperf3 server that writes its pid (it is stopped by that pid)."""
    return ["sh", "-c", f"echo $$ > /run/bench-order-{port}.pid; exec iperf3 -s -p {port}"]


def visit_mode(lab: labctl.Lab, nodes: Mapping[str, remote.Node], spec: ModeSpec) -> float:
    """Switch the lab to ``spec`` (if it is elsewhere) and wait until it carries pods; s."""
    t0 = time.monotonic()
    if labctl.current_mode(lab) != spec:
        labctl.deploy(lab, spec, switch=True)
    labctl.wait_nodes_ready(lab, spec, timeout_s=600)
    labctl.wait_pod_routes(lab, dict(nodes), timeout_s=300)
    return time.monotonic() - t0


def visit(
    lab: labctl.Lab, nodes: Mapping[str, remote.Node], spec: ModeSpec, seconds: int, reps: int
) -> Visit:
    """Switch to ``spec``; then ``reps`` × (pod→pod, node→node) alternately."""
    switch_s = visit_mode(lab, nodes, spec)
    a_name, b_name = list(nodes)[:2]
    factory = pods.PodFactory(lab.client(), dict(nodes))
    a, b = factory.create([a_name, b_name], prefix="order", wait_s=600)
    life = int(reps * 2 * (seconds + 60) + 120)
    try:
        b.node.start(["ip", "netns", "exec", b.netns, *_server(POD_PORT)], life)
        nodes[b_name].start(_server(NODE_PORT), life)
        time.sleep(3)
        node_b_ip = nodes[b_name].underlay_ip

        def measure(target: str, port: int, in_pod: bool) -> float:
            argv = iperf3.client_command(target, port, seconds)
            err: Exception | None = None
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
    return Visit(spec, got["pod"], got["node"], switch_s)


def row_key(spec: ModeSpec) -> str:
    """A mode's name in a round's row (the seeds name modes without encryption)."""
    return spec.mode if spec.encryption == "none" else str(spec)


def measure(
    lab: labctl.Lab,
    nodes: Mapping[str, remote.Node],
    rounds: int = 1,
    seconds: int = 5,
    reps: int = 2,
    modes: str = MODES,
) -> list[dict[str, float]]:
    """``rounds`` rounds over ``modes`` (order rotated per round): per round each mode's
    median pod→pod ÷ median node→node of its visit, and ``"host": 1.0``."""
    specs = [ModeSpec.parse(m) for m in modes.split(",")]
    out: list[dict[str, float]] = []
    for r in range(rounds):
        row: dict[str, float] = {}
        for spec in [specs[(i + r) % len(specs)] for i in range(len(specs))]:
            v = visit(lab, nodes, spec, seconds, reps)
            row[row_key(spec)] = statistics.median(v.pod_bps) / statistics.median(v.node_bps)
        row["host"] = 1.0
        out.append(row)
    return out
