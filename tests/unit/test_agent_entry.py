"""``podlab-agent``'s entry: ``--check`` starts without the agent's kernel code.

A whole-lab mode switch runs ``podlab-agent --check --wait`` on every node while every
agent restarts, all on the machine's few cores: the check imports the configuration
and the etcd client, not pyroute2, the datapaths or the proxies.
"""

from __future__ import annotations

import subprocess
import sys


def imported(module: str) -> set[str]:
    """The top-level names ``module`` pulls in (a fresh interpreter)."""
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(out.split())


def test_the_entry_and_the_check_leave_the_kernel_code_out() -> None:
    entry = imported("harness.agent.main")
    assert "harness.agent.health" in entry and "harness.store" in entry
    heavy = {"pyroute2", "harness.agent.agent", "harness.agent.services", "harness.agent.pods"}
    assert not heavy & entry, sorted(heavy & entry)
    # the control: the agent itself does import them
    assert heavy <= imported("harness.agent.agent")


def test_the_entry_keeps_the_checks_names() -> None:
    from harness.agent import health, main

    assert main.check is health.check and main.check_record is health.check_record
