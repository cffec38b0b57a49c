"""Writing, reading and merging results files; bad files fail with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.results.model import Environment
from harness.results.store import ResultsWriter, RunMeta, load, merge, save

ENV = Environment(kernel="6.1.0", cpu_count=2, fallbacks=("wireguard-go",))


def _writer(
    path: Path, run_id: str = "run-1", modes: tuple[str, ...] = ("vxlan",)
) -> ResultsWriter:
    return ResultsWriter(
        path, RunMeta(run_id=run_id, topology="single", modes=modes, environment=ENV)
    )


def test_writer_keeps_a_valid_file_after_every_record(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    w = _writer(path)
    w.record("pod_ready_p99_s", 6.2, "s", mode="vxlan", scenario=5, threshold=5.0)
    partial = load(path)
    assert partial.finished_at is None
    assert partial.measurements[0].passed is False  # judged from the threshold
    w.check(3, "test_path_mtu", mode="vxlan", outcome="failed", message="1451 passed", duration_s=2)
    w.note_fallback("userspace-ipip")
    done = w.finish()
    assert done.finished_at is not None
    again = load(path)
    assert again == done
    assert again.environment.fallbacks == ("wireguard-go", "userspace-ipip")
    assert again.checks[0].topology == "single"


def test_writer_refuses_a_measurement_without_its_unit(tmp_path: Path) -> None:
    w = _writer(tmp_path / "r.json")
    with pytest.raises(ValueError, match="must end with its unit"):
        w.record("throughput", 1.0, "bps", mode="vxlan")
    assert load(tmp_path / "r.json").measurements == ()


def _error(path: Path) -> str:
    with pytest.raises(UserError) as exc:
        load(path)
    text = str(exc.value)
    assert "\n" not in text and str(path) in text and "(fix:" in text
    return text


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "absent.json")


def test_invalid_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1,\n  "run_id": }')
    assert "invalid JSON" in _error(bad) and "line 2" in _error(bad)


def test_wrong_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    _writer(path).finish()
    doc = json.loads(path.read_text())
    doc["schema_version"] = 99
    path.write_text(json.dumps(doc))
    text = _error(path)
    assert "schema_version" in text and "99" in text and "regenerate" in text


def test_not_a_results_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    assert "not a podlab results file" in _error(path)


def test_invalid_record_is_located(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    w = _writer(path)
    w.record("throughput_bps", 1e9, "bps", mode="vxlan")
    doc = json.loads(path.read_text())
    doc["measurements"][0]["unit"] = "Gbit/s"
    path.write_text(json.dumps(doc))
    assert "measurements[0]" in _error(path)


def test_merge_combines_runs(tmp_path: Path) -> None:
    a, b = (
        _writer(tmp_path / "a.json", "a", ("vxlan",)),
        _writer(tmp_path / "b.json", "b", ("bgp",)),
    )
    a.check(1, "t", mode="vxlan", outcome="passed")
    b.check(1, "t", mode="bgp", outcome="failed")
    b.note_fallback("userspace-ipip")
    merged = merge([a.finish(), b.finish()])
    assert merged.run_id == "a+b" and merged.modes == ("vxlan", "bgp")
    assert [c.mode for c in merged.checks] == ["vxlan", "bgp"]
    assert merged.environment.fallbacks == ("wireguard-go", "userspace-ipip")


def test_merge_of_an_unfinished_run_is_unfinished(tmp_path: Path) -> None:
    done = _writer(tmp_path / "a.json", "a").finish()
    partial = _writer(tmp_path / "b.json", "b").results()
    assert merge([done, partial]).finished_at is None


def test_save_is_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    save(_writer(tmp_path / "w.json").finish(), path)
    assert path.stat().st_mode & 0o044 == 0o044
