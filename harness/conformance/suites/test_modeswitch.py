"""Scenario 23: switching the datapath mode under live traffic (e.g. vxlan → host-gw).

Runs as the last test of each mode of a matrix that has a next mode: while a
long-lived TCP connection and a UDP stream run between pods on two nodes, the
lab is re-deployed with the next mode — the deploy the matrix would do anyway,
so the switch costs no extra deploy. In a lockstep run (``--entry``: the lab's
clusters run one entry together, ADR 0018) the next mode is the next phase's,
and the cluster is switched back afterwards, since the other cluster and the
mesh checks stay in this phase's mode. With a quiet lock the test holds its cluster
alone throughout and the machine alone while it measures (the switch under flows);
the switch back judges nothing (it restores the phase), so it lets the machine be
shared (``waits``): the other cluster's ordinary checks go on beside it, never a quiet
one, nor any check of this cluster (harness/conformance/quiet.py).
Recorded: requests answered before and after, the interruption window of each
flow, and a timeline. The flows must
work again after the switch; how long they stopped is a measurement.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.conformance import labctl
from harness.conformance import services as svc
from harness.conformance.catalogue import not_applicable
from harness.conformance.fixtures import EchoPods
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.pods import TCP_PORT, UDP_PORT, Pod
from harness.conformance.quiet import Holding
from harness.conformance.remote import Node, output
from harness.conformance.run import Recorder, Run
from harness.probes import echo

SETTLE_S = 5.0  # of flow after the agents are ready: the recovery's evidence
# before the deploy: this long after each flow's first answer (its ready file; it was a
# fixed SETTLE_S from the start, ssh and the interpreter's start-up included), so the
# flows show several healthy 0.5 s buckets before the switch
LEAD_S = 2.0
FLOW_MAX_S = 240.0


@pytest.fixture(scope="module")
def switch_pods(echo_pods: EchoPods) -> tuple[Pod, Pod]:
    """The mode's shared echo pods on two nodes (the cross-node path)."""
    return echo_pods.pair("cross-node")


def _next_mode(run: Run, mode: str) -> str | None:
    modes = list(run.options.modes)
    if mode not in modes or modes.index(mode) + 1 >= len(modes):
        return None
    return modes[modes.index(mode) + 1]


@pytest.mark.scenario(23)
@pytest.mark.waits  # for the switch back
def test_flows_survive_a_mode_switch(
    lab: Lab,
    mode: str,
    switch_pods: tuple[Pod, Pod],
    podlab_run: Run,
    record: Recorder,
    nodes: dict[str, Node],
    quiet_lock: Holding,
) -> None:
    target = _next_mode(podlab_run, mode)
    if target is None:
        not_applicable(f"{mode} is the last mode of the matrix: no switch to measure")  # full
    try:
        _switch_under_flows(lab, mode, target, switch_pods, record)
    finally:
        if podlab_run.options.entry is not None:  # lockstep: leave the cluster in its phase
            here = ModeSpec.parse(mode)
            with quiet_lock.shared():  # nothing judged: the cluster (held alone) goes back
                back_s = labctl.deploy(lab, here, switch=True)
                labctl.wait_nodes_ready(lab, here)
                labctl.wait_pod_routes(lab, nodes)
            held = {"machine": "shared"} if quiet_lock.claim is not None else {}
            record("mode_switch_back_deploy_s", back_s, "s", labels={"to": mode, **held})


def _switch_under_flows(
    lab: Lab, mode: str, target: str, switch_pods: tuple[Pod, Pod], record: Recorder
) -> None:
    client, server = switch_pods
    spec = ModeSpec.parse(target)
    stop = f"/run/podlab-flow-{uuid.uuid4().hex[:8]}.stop"  # node-private /run
    lead = {proto: svc.ready_file(f"flow-{proto}") for proto in ("tcp", "udp")}
    client.node.run(["rm", "-f", stop, *lead.values()], timeout_s=10)
    with ThreadPoolExecutor(max_workers=2) as pool:
        flows = {
            proto: pool.submit(
                client.run,
                echo.flow_command(proto, server.ip, port, FLOW_MAX_S, stop_file=stop,
                                  ready=(lead[proto], LEAD_S)),
                FLOW_MAX_S + 30,
            )
            for proto, port in (("tcp", TCP_PORT), ("udp", UDP_PORT))
        }  # fmt: skip
        svc.wait_ready([client.node], *lead.values())
        began = time.time()
        deploy_s = labctl.deploy(lab, spec, switch=True)
        labctl.wait_nodes_ready(lab, spec)
        ready = time.time()
        time.sleep(SETTLE_S)
        client.node.check(["touch", stop], timeout_s=10)  # the flows end at their next request
        results = {proto: echo.parse_flow(output(f.result())) for proto, f in flows.items()}
        client.node.run(["rm", "-f", stop, *lead.values()], timeout_s=10)
    record("mode_switch_deploy_s", deploy_s, "s", labels={"to": target})
    problems = []
    for proto, flow in results.items():
        switch_t, ready_t = began - flow.start, ready - flow.start
        before = [s for s in flow.samples if s[0] + flow.bucket_s <= switch_t]
        record(f"mode_switch_{proto}_outage_s", flow.outage_s(), "s", labels={"to": target})
        events = [(switch_t, "deploy starts"), (ready_t, "agents ready")]
        record.timeline(
            f"{mode} → {target}: {proto} flow", events,
            [(t, ok / sent if sent else 0.0) for t, sent, ok in flow.samples],
            sample_name="answered", sample_unit="ratio",
        )  # fmt: skip
        if not before or any(ok < sent for _, sent, ok in before[1:]):
            problems.append(f"{proto} flow was not healthy before the switch")
        if flow.recovered_after(ready_t) is None:
            problems.append(f"{proto} flow did not recover after the switch to {target}")
    assert not problems, f"{client} → {server}, {mode} → {target}: " + "; ".join(problems)
