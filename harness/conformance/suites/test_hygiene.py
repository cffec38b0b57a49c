"""Scenario 30: hygiene of the run: no agent errors or crashes, no interface errors.

Runs after the traffic suites of each mode and before the fault injection, so
the errors a fault provokes on purpose are not counted against the agent; the
window starts when the mode's tests began. Whether ``down`` leaves anything
behind is checked by the plugin itself after it tears down a lab it built.
"""

from __future__ import annotations

import json

import pytest

from harness.conformance.labctl import Lab
from harness.conformance.remote import Node
from harness.conformance.run import Recorder, Run
from harness.probes import agentlog

AGENT_LOG = "/var/log/podlab/podlab-agent.log"


@pytest.mark.scenario(30)
def test_agent_logs_have_no_errors_or_tracebacks(
    lab: Lab, mode: str, nodes: dict[str, Node], podlab_run: Run, record: Recorder
) -> None:
    since = podlab_run.mode_started_at - 5.0
    problems = []
    for plan in lab.cluster_nodes():
        res = nodes[plan.name].run(agentlog.command(AGENT_LOG), timeout_s=30)
        found = agentlog.scan(res.stdout, since)
        record("agent_log_errors_count", float(len(found.errors)), "count",
               labels={"node": plan.name})  # fmt: skip
        if found.tracebacks:
            problems.append(f"{plan.name}: {found.tracebacks} traceback(s)")
        if found.errors:
            problems.append(f"{plan.name}: {len(found.errors)} error line(s), first: "
                            f"{found.errors[0]}")  # fmt: skip
    assert not problems, f"agent logs since the {mode} tests began:\n  " + "\n  ".join(problems)


@pytest.mark.scenario(30)
def test_underlay_interfaces_have_no_errors(
    lab: Lab, mode: str, nodes: dict[str, Node], record: Recorder
) -> None:
    """rx/tx errors on a node's underlay mean a broken datapath (drops are recorded only)."""
    problems = []
    for plan in lab.cluster_nodes():
        node = nodes[plan.name]
        res = node.check(["ip", "-j", "-s", "link", "show", "dev", node.underlay_if])
        stats = json.loads(res.stdout)[0].get("stats64", {})
        rx, tx = stats.get("rx", {}), stats.get("tx", {})
        errors = int(rx.get("errors", 0)) + int(tx.get("errors", 0))
        drops = int(rx.get("dropped", 0)) + int(tx.get("dropped", 0))
        record("underlay_errors_count", float(errors), "count", labels={"node": plan.name})
        record("underlay_drops_count", float(drops), "count", labels={"node": plan.name})
        if errors:
            problems.append(f"{plan.name} {node.underlay_if}: {errors} rx/tx errors")
    assert not problems, "underlay interface errors: " + "; ".join(problems)
