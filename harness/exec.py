"""The single gateway for running external tools.

argv lists only (never ``shell=True``), always a timeout, output captured, and an
optional network namespace entered with ``ip netns exec`` so a call is explicit
about where it runs. Secrets never go in argv: pass them in files or stdin.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ToolError


@dataclass(frozen=True)
class Result:
    """What a finished command printed and returned."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    timeout: float = 30.0,
    netns: str | None = None,
    check: bool = True,
    input: str | None = None,
    cgroup_procs: Path | None = None,
) -> Result:
    """Run ``argv`` (inside named netns ``netns`` if given) and return its output.

    Raises ToolError when the command is missing, times out, or (with ``check``)
    exits non-zero, so callers never have to remember to look at a return code.
    ``cgroup_procs``: the child joins that cgroup before it executes, so whatever
    it leaves running (a daemonized qemu) is fenced with the lab from its start.
    """
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)

    def join_cgroup() -> None:  # runs in the child between fork and exec
        if cgroup_procs is not None:
            cgroup_procs.write_text("0")

    try:
        proc = subprocess.run(
            full,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
            preexec_fn=join_cgroup if cgroup_procs is not None else None,
        )
    except FileNotFoundError as exc:
        raise ToolError(full, 127, f"{full[0]}: not found") from exc
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise ToolError(full, None, str(out)) from exc
    if check and proc.returncode != 0:
        raise ToolError(full, proc.returncode, proc.stderr or proc.stdout)
    return Result(full, proc.returncode, proc.stdout, proc.stderr)
