"""Run a command in a running pod on this node, as a container runtime's exec does.

``podlab exec pod/NAME -- CMD`` runs this on the pod's node (over ssh):
``python -m harness.agent.podexec NAMESPACE NAME -- CMD…``. The command joins
the pod's own main process — its network namespace AND its private mount
namespace, where the agent bind-mounted the pod's ``resolv.conf`` and
``nsswitch.conf`` — gets that process's environment (``PATH`` with the agent's
venv first, ``POD_NAME``, ``POD_NAMESPACE``, ``POD_IP``, ``NODE_NAME``) and its
working directory, so ``getent hosts web.default.svc.cluster.local`` resolves
exactly as it does for the pod's process. The environment is handed over as
the environment of ``nsenter``, never in argv. This process becomes the
command (exec), so its exit status, stdin and terminal are the command's.

Exit statuses of its own: 1 when the pod is unknown on this node or its
container is not running (kubectl's answer to the same), 2 for bad arguments;
``nsenter`` gives 126/127 when the command cannot be run or is not found.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from harness.agent import procs
from harness.agent.config import DEFAULT_PATH, ConfigError, load


def pod_process(state_dir: Path, netns_dir: Path, namespace: str, name: str) -> int:
    """The pid of the pod's running main process on this node; ValueError saying why not."""
    path = state_dir / "pods" / f"{namespace}_{name}.json"
    try:
        st = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"pod {namespace}/{name} is not run by this node's agent") from exc
    pid = int(st.get("pid") or 0)
    if not pid or not procs.alive_in(pid, str(netns_dir / st.get("netns", ""))):
        phase = st.get("phase", "Pending")
        raise ValueError(
            f"cannot exec into pod {namespace}/{name}: its container is not running (phase {phase})"
        )
    return pid


def environment(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def nsenter_argv(pid: int, command: list[str]) -> list[str]:
    """Join ``pid``'s mount and network namespaces and working directory, run ``command``."""
    return ["nsenter", f"--target={pid}", "--mount", "--net", "--wd", "--", *command]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.agent.podexec", description=__doc__)
    ap.add_argument("--config", default=DEFAULT_PATH, help="agent.yaml (default %(default)s)")
    ap.add_argument("namespace")
    ap.add_argument("name")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS…")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("podexec: no command given (… NAMESPACE NAME -- CMD ARGS…)", file=sys.stderr)
        return 2
    try:
        cfg = load(args.config)
        pid = pod_process(cfg.state_dir, cfg.netns_dir, args.namespace, args.name)
        env = environment(pid)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
    sys.stdout.flush()
    os.execve(nsenter, nsenter_argv(pid, command), env)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
