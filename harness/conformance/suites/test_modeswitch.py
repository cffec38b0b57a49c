"""Scenario 23: switching the datapath mode under live traffic (e.g. vxlan → host-gw).

Runs as the last test of each mode of a matrix that has a next mode: while a
long-lived TCP connection and a UDP stream run between pods on two nodes, the
lab is re-deployed with the next mode — the deploy the matrix would do anyway,
so the switch costs no extra deploy. The flows and their judging are
harness/conformance/switchflows.py's, shared with the lockstep run (``--entry``:
the lab's clusters run one entry together, ADR 0018), where 23 is measured at the
whole-lab switch between two phases (``python -m harness.conformance.switchflows``)
and not in any phase's session (matrix.lockstep_decision). With a quiet lock the
test holds its cluster and the machine alone throughout (harness/conformance/quiet.py).
Recorded: requests answered before and after, the interruption window of each
flow, and a timeline. The flows must work again after the switch; how long they
stopped is a measurement.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.conformance import labctl, switchflows
from harness.conformance.catalogue import not_applicable
from harness.conformance.fixtures import EchoPods
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.pods import Pod
from harness.conformance.run import Recorder, Run


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
def test_flows_survive_a_mode_switch(
    lab: Lab, mode: str, switch_pods: tuple[Pod, Pod], podlab_run: Run, record: Recorder
) -> None:
    target = _next_mode(podlab_run, mode)
    if target is None:
        not_applicable(f"{mode} is the last mode of the matrix: no switch to measure")  # full
    client, server = switch_pods
    spec = ModeSpec.parse(target)
    with ThreadPoolExecutor(max_workers=2) as pool:
        flows = switchflows.start(pool, client, server)
        switchflows.wait_lead(flows)
        began = time.time()
        deploy_s = labctl.deploy(lab, spec, switch=True)
        labctl.wait_nodes_ready(lab, spec)
        ready = time.time()
        time.sleep(switchflows.SETTLE_S)
        results = switchflows.stop(flows)
    record("mode_switch_deploy_s", deploy_s, "s", labels={"to": target})
    problems: list[str] = []
    for j in switchflows.judge(results, began, ready, target):
        record(f"mode_switch_{j.proto}_outage_s", j.outage_s, "s", labels={"to": target})
        record.timeline(
            f"{mode} → {target}: {j.proto} flow", j.events, j.samples,
            sample_name="answered", sample_unit="ratio",
        )  # fmt: skip
        problems += j.problems
    assert not problems, f"{client} → {server}, {mode} → {target}: " + "; ".join(problems)
