"""The after-down check finds a lab's leftovers by name (and only that lab's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.conformance import hygiene
from harness.exec import run


def test_a_lab_that_never_existed_left_nothing(tmp_path: Path) -> None:
    assert hygiene.leftovers("t-conf-never", tmp_path / "absent") == []


def test_a_remaining_lab_directory_is_reported(tmp_path: Path) -> None:
    assert hygiene.leftovers("t-conf-never", tmp_path) == [f"lab directory {tmp_path}"]


@pytest.mark.root
def test_a_left_namespace_is_reported_and_written_as_a_failed_check(tmp_path: Path) -> None:
    name = "t-conf-hyg"
    netns = f"podlab-{name}-c1-w1"
    run(["ip", "netns", "add", netns])
    try:
        left = hygiene.record_after_down(name, tmp_path / "gone", tmp_path, "vxlan")
    finally:
        run(["ip", "netns", "del", netns])
    assert left == [f"netns {netns}"]
    (results,) = tmp_path.glob("*-after-down.json")
    (check,) = json.loads(results.read_text())["checks"]
    assert (check["scenario"], check["outcome"], check["mode"]) == (30, "failed", "vxlan")
    assert netns in check["message"]
    assert hygiene.leftovers(name, tmp_path / "gone") == []
