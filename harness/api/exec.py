"""Run a command inside a pod, as ``kubectl exec`` does, through the node's ssh.

The pod's node (``spec.nodeName``) and network namespace (``status.netns``,
written by the agent) come from etcd; the command runs as
``ip netns exec <netns> CMD…`` on that node over ssh with the lab's ssh config
(``.podlab/<lab>/ssh_config``, hosts named after nodes). The remote argv is
quoted as one string because ssh joins its arguments with spaces, which would
otherwise split ``sh -c 'a b'`` differently on the far side.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from harness.api.client import ApiClient
from harness.api.objects import KINDS
from harness.errors import LabError, UserError
from harness.exec import Result, run


def pod_exec_argv(ssh_config: Path, node: str, netns: str, command: list[str]) -> list[str]:
    """The ssh argv that runs ``command`` in ``netns`` on ``node``."""
    remote = shlex.join(["ip", "netns", "exec", netns, *command])
    return ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", node, remote]


def parse_pod_ref(ref: str) -> str:
    """``pod/NAME`` (or ``po/NAME``, ``pods/NAME``) → NAME."""
    kind, sep, name = ref.partition("/")
    info = KINDS["Pod"]
    if not sep or kind.lower() not in info.aliases or not name:
        raise UserError(f"{ref!r} does not name a pod (fix: write pod/NAME)")
    return name


def exec_in_pod(
    client: ApiClient,
    lab_dir: Path | None,
    namespace: str,
    name: str,
    command: list[str],
    timeout_s: float,
    stdin: str | None = None,
) -> Result:
    """Run ``command`` in pod ``namespace/name``; the Result carries its exit status."""
    if not command:
        raise UserError("no command given (fix: podlab exec pod/NAME -- CMD ARGS…)")
    if lab_dir is None:
        raise UserError("exec needs a lab for its ssh config (fix: pass --lab, not only --etcd)")
    ssh_config = lab_dir / "ssh_config"
    if not ssh_config.is_file():
        raise LabError(f"{ssh_config} is missing; is the lab fully up?")
    pod = client.get(KINDS["Pod"], namespace, name)
    node = pod.get("spec", {}).get("nodeName")
    status = pod.get("status", {})
    netns = status.get("netns")
    if not node or not netns:
        phase = status.get("phase", "Pending")
        raise LabError(
            f"pod {namespace}/{name} has no network namespace yet (phase {phase}); "
            "wait until `podlab get pod` shows it Running"
        )
    return run(
        pod_exec_argv(ssh_config, node, netns, command), timeout=timeout_s, check=False, input=stdin
    )
