"""containerlab's ``exec:``: each node's commands, in order, once the lab is up.

The commands run inside the node (its net, uts, mount and PID namespaces and its
cgroup, as ``podlab exec`` enters them) through ``/bin/sh -c``, with the node's
``env:`` on top of a minimal environment, one at a time in declaration order of
nodes (after ``wait-for`` and ``startup-delay``, ``LabPlan.exec_order``) and
commands. Both backends run this code (the netns one through ``in_netns_node``,
the VM one through ``over_ssh``). Every command's output and exit status go to
``<lab dir>/exec/<node>.log``. The first failing command stops ``up`` with a
located problem carrying its output; ``up`` then rolls the lab back.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import Problem, UserError
from harness.plan.model import LabPlan, NodePlan

TIMEOUT = 120.0  # seconds per command: an exec that never ends fails up
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
TAIL = 800  # characters of a failing command's output kept in the error line


def node_env(plan: LabPlan, node: NodePlan) -> dict[str, str]:
    """The environment of a node's exec commands (containerlab sets CLAB_* too)."""
    return {
        **BASE_ENV,
        "CLAB_LAB_NAME": plan.clab_name or plan.name,
        "CLAB_NODE_NAME": node.clab_name or node.name,
        **dict(node.env),
    }


def run_all(
    plan: LabPlan,
    log_dir: Path,
    enter: Callable[[NodePlan], Callable[[list[str]], list[str]]],
) -> None:
    """Run every node's ``exec:``; raise UserError at the first failing command.

    ``enter(node)`` turns an argv into one that runs it inside that node (a netns
    node: ``in_netns_node``, a VM: ``over_ssh``).
    """
    start = time.monotonic()
    for name in plan.exec_order or tuple(plan.nodes):  # wait-for and startup-delay order
        node = plan.nodes[name]
        if not node.exec:
            continue
        if node.exec_delay:  # containerlab's startup-delay (its own, or a node's it waits for)
            wait = max(0.0, start + node.exec_delay - time.monotonic())
            log_dir.mkdir(parents=True, exist_ok=True)
            with (log_dir / f"{node.name}.log").open("a") as f:
                f.write(
                    f"# startup-delay: exec starts {node.exec_delay} s after the nodes "
                    f"(waited {wait:.1f} s)\n"
                )
            time.sleep(wait)
        run_node(plan, node, log_dir, enter(node))


def in_netns_node(pid: int, procs: Path | None) -> Callable[[list[str]], list[str]]:
    """argv → the argv running it in netns node ``pid`` (through this module's ``main``).

    A separate interpreter, not ``preexec_fn``: ``up`` may have threads (progress
    output), and a child must fork once more to be in the node's PID namespace.
    """
    head = [sys.executable, "-m", "harness.lab.nodeexec", str(pid), str(procs or ""), "--"]
    return lambda argv: [*head, *argv]


def over_ssh(ssh_config: Path, node: str) -> Callable[[list[str]], list[str]]:
    """argv → the argv running it in VM guest ``node`` over the lab's ssh config."""
    head = ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", node, "--"]
    return lambda argv: [*head, shlex.join(argv)]


def command_argv(plan: LabPlan, node: NodePlan, cmd: str) -> list[str]:
    """``env -i K=V… /bin/sh -c CMD``: the node's environment only, not podlab's."""
    env = [f"{k}={v}" for k, v in node_env(plan, node).items()]
    return ["env", "-i", *env, "/bin/sh", "-c", cmd]


def run_node(
    plan: LabPlan, node: NodePlan, log_dir: Path, enter: Callable[[list[str]], list[str]]
) -> None:
    """One node's commands in order, logged; the first failure raises."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{node.name}.log"
    with log.open("a") as f:
        for i, cmd in enumerate(node.exec):
            f.write(f"$ {cmd}\n")
            f.flush()
            try:
                done = subprocess.run(
                    enter(command_argv(plan, node, cmd)),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=TIMEOUT,
                    check=False,
                )
                output, code = done.stdout.decode(errors="replace"), done.returncode
                status = f"exit status {code}"
            except subprocess.TimeoutExpired as exc:
                output = (exc.stdout or b"").decode(errors="replace")
                code, status = -1, f"no exit after {TIMEOUT:.0f} s"
            f.write(output + ("" if output.endswith("\n") or not output else "\n"))
            f.write(f"# {status}\n")
            f.flush()
            if code != 0:
                _fail(plan, node, i, cmd, status, output)


def _fail(plan: LabPlan, node: NodePlan, i: int, cmd: str, status: str, output: str) -> None:
    text = " ".join(output.split())
    text = ("…" + text[-TAIL:]) if len(text) > TAIL else text
    raise UserError(
        [
            Problem(
                file=plan.source,
                where=f"node {node.clab_name or node.name} exec[{i}]",
                message=f"{cmd!r} failed ({status}): {text or 'no output'}; "
                "the lab was rolled back",
                hint="fix the command (it runs with /bin/sh -c inside the node after up)",
                line=node.exec_lines[i] if i < len(node.exec_lines) else None,
            )
        ]
    )


def main(argv: list[str]) -> int:
    """``python -m harness.lab.nodeexec PID PROCS -- CMD…``: CMD inside node PID."""
    from harness.lab.cli import run_in_node
    from harness.lab.nodeinit import enter_node

    pid, procs, cmd = int(argv[0]), argv[1], argv[3:]
    enter_node(pid, Path(procs) if procs else None)
    return run_in_node(cmd)


if __name__ == "__main__":  # pragma: no cover - run by run_node in a child process
    sys.exit(main(sys.argv[1:]))
