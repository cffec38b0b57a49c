"""scripts/conformance.sh: the environment its Python processes run in."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.deploy.deploy import source_root

SCRIPT = source_root() / "scripts" / "conformance.sh"


def _bytecode_block() -> str:
    """The script's lines that set up bytecode, from its `if` on PYTHONDONTWRITEBYTECODE
    to the matching `fi`."""
    lines = SCRIPT.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith('if [ -n "${PYTHONDONTWRITE'))
    end = next(i for i in range(start, len(lines)) if lines[i] == "fi")
    return "\n".join(lines[start : end + 1])


def _env_after(block: str, env: dict[str, str], cwd: Path) -> dict[str, str]:
    out = subprocess.run(["bash", "-c", f"{block}\nenv -0"], env=env, cwd=cwd,
                         capture_output=True, check=True).stdout  # fmt: skip
    return dict(e.split("=", 1) for e in out.decode().split("\0") if "=" in e)


@pytest.mark.parametrize("prefix", [None, "/elsewhere"])
def test_a_run_keeps_its_bytecode_out_of_the_tree(tmp_path: Path, prefix: str | None) -> None:
    """With PYTHONDONTWRITEBYTECODE set, every process compiled podlab again: the run
    writes its bytecode under .podlab/pycache (or a prefix the caller chose) instead."""
    env = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"}
    if prefix:
        env["PYTHONPYCACHEPREFIX"] = prefix
    after = _env_after(_bytecode_block(), env, tmp_path)
    assert "PYTHONDONTWRITEBYTECODE" not in after
    assert after["PYTHONPYCACHEPREFIX"] == (prefix or str(tmp_path / ".podlab" / "pycache"))


def test_a_run_leaves_an_environment_that_writes_bytecode_alone(tmp_path: Path) -> None:
    after = _env_after(_bytecode_block(), {"PATH": os.environ["PATH"]}, tmp_path)
    assert "PYTHONPYCACHEPREFIX" not in after and "PYTHONDONTWRITEBYTECODE" not in after
