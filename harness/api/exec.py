"""Run a command inside a pod, as ``kubectl exec`` does, through the node's ssh.

The pod's node (``spec.nodeName``) comes from etcd; on that node the command
runs as ``<node venv>/bin/python -m harness.agent.podexec NS NAME -- CMD…``
over ssh with the lab's ssh config (``.podlab/<lab>/ssh_config``, hosts named
after nodes). ``podexec`` joins the pod's own process — network AND mount
namespace (the pod's resolv.conf), environment and working directory — and
becomes the command, so the exit status is the command's.

Streams as kubectl's do: stdin only with ``-i`` (else ssh reads /dev/null),
a terminal with ``-t`` (ssh ``-tt``: the remote command gets a pty, so a
shell is interactive and Ctrl-C reaches it). The remote argv is quoted as one
string because ssh joins its arguments with spaces, which would otherwise
split ``sh -c 'a b'`` differently on the far side.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from harness.api.client import ApiClient
from harness.api.objects import KINDS
from harness.errors import LabError, UserError
from harness.exec import Result, run
from harness.probes.echo import NODE_PYTHON


@dataclass(frozen=True)
class PodTarget:
    """Where a pod runs and how to reach its node."""

    namespace: str
    name: str
    node: str
    ssh_config: Path


def pod_exec_argv(
    target: PodTarget, command: list[str], stdin: bool = False, tty: bool = False
) -> list[str]:
    """The ssh argv that runs ``command`` in the pod on its node."""
    remote = shlex.join(
        [NODE_PYTHON, "-m", "harness.agent.podexec", target.namespace, target.name, "--", *command]
    )
    streams = ["-tt"] if tty else ([] if stdin else ["-n"])
    return ["ssh", "-F", str(target.ssh_config), "-o", "BatchMode=yes", *streams,
            target.node, remote]  # fmt: skip


def parse_pod_ref(ref: str) -> str:
    """``pod/NAME`` (or ``po/NAME``, ``pods/NAME``) → NAME."""
    kind, sep, name = ref.partition("/")
    info = KINDS["Pod"]
    if not sep or kind.lower() not in info.aliases or not name:
        raise UserError(f"{ref!r} does not name a pod (fix: write pod/NAME)")
    return name


def find_pod(client: ApiClient, lab_dir: Path | None, namespace: str, name: str) -> PodTarget:
    """The running pod's node and the lab's ssh config; a clear error when there is none."""
    if lab_dir is None:
        raise UserError("exec needs a lab for its ssh config (fix: pass --lab, not only --etcd)")
    ssh_config = lab_dir / "ssh_config"
    if not ssh_config.is_file():
        raise LabError(f"{ssh_config} is missing; is the lab fully up?")
    pod = client.get(KINDS["Pod"], namespace, name)
    node = pod.get("spec", {}).get("nodeName")
    status = pod.get("status", {})
    if not node or not status.get("netns") or status.get("phase") != "Running":
        phase = status.get("phase", "Pending")
        raise LabError(
            f"pod {namespace}/{name} is not running (phase {phase}); "
            "wait until `podlab get pod` shows it Running"
        )
    return PodTarget(namespace, name, node, ssh_config)


def exec_in_pod(
    client: ApiClient,
    lab_dir: Path | None,
    namespace: str,
    name: str,
    command: list[str],
    timeout_s: float,
    stdin: str | None = None,
) -> Result:
    """Run ``command`` in pod ``namespace/name`` and collect its output (for programs:
    the suites use this, the CLI streams through the same argv)."""
    if not command:
        raise UserError("no command given (fix: podlab exec pod/NAME -- CMD ARGS…)")
    target = find_pod(client, lab_dir, namespace, name)
    argv = pod_exec_argv(target, command, stdin=stdin is not None)
    return run(argv, timeout=timeout_s, check=False, input=stdin)
