"""Golden files: each bad topology yields exactly its recorded error lines.

Regenerate after an intended change of wording with
``PODLAB_UPDATE_GOLDEN=1 pytest tests/unit/test_topology_golden.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UserError
from harness.plan.build import load_plan
from harness.topology.cli import plan_summary
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "topology"
BAD = sorted((GOLDEN / "bad").glob("*.clab.yml"))
EXAMPLES = sorted((REPO / "topologies").glob("*.clab.yml"))
CLAB = sorted((GOLDEN / "clab").glob("*.clab.yml"))  # containerlab-style files (issue 17)
UPDATE = os.environ.get("PODLAB_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_topology_errors(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    rel = path.relative_to(REPO)
    with pytest.raises(UserError) as info:
        load_plan(rel)
    got = "\n".join(str(p) for p in info.value.problems) + "\n"
    expected = path.with_suffix("").with_suffix(".err")
    if UPDATE:
        expected.write_text(got)
    assert got == expected.read_text()


@pytest.mark.parametrize("path", BAD[:3], ids=lambda p: p.stem)
def test_cli_exit_status_2_without_traceback(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(line.startswith("error: ") for line in err.strip().splitlines())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_plan_golden(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    got = json.dumps(plan_summary(load_plan(path.relative_to(REPO))), indent=1) + "\n"
    expected = GOLDEN / "plans" / f"{path.name.removesuffix('.clab.yml')}.json"
    if UPDATE:
        expected.write_text(got)
    assert got == expected.read_text()


@pytest.mark.parametrize("path", CLAB, ids=lambda p: p.stem)
def test_containerlab_style_plan_golden(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written as containerlab users write them, and the plan podlab makes of them."""
    monkeypatch.chdir(REPO)
    got = json.dumps(plan_summary(load_plan(path.relative_to(REPO))), indent=1) + "\n"
    expected = path.with_suffix("").with_suffix(".json")
    if UPDATE:
        expected.write_text(got)
    assert got == expected.read_text()


def test_validate_names_the_regime(capsys: pytest.CaptureFixture[str]) -> None:
    """One line says which regime a file is in: plain containerlab, or podlab's."""
    assert main(["validate", str(CLAB[0])]) == 0
    out = capsys.readouterr().out
    assert "regime: plain containerlab file" in out
    assert main(["validate", str(EXAMPLES[0])]) == 0
    assert "regime: podlab lab" in capsys.readouterr().out
