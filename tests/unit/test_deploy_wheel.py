"""The wheelhouse key: a content hash that moves with the sources and nothing else."""

from __future__ import annotations

import tarfile
from pathlib import Path

from harness.deploy.deploy import count_hosts
from harness.deploy.wheel import _tar, dependency_closure, pinned_requirements, source_digest

PINS = ("pyyaml==6.0.3",)


def tree(root: Path) -> Path:
    (root / "harness" / "agent").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'podlab'\n")
    (root / "harness" / "__init__.py").write_text("")
    (root / "harness" / "agent" / "main.py").write_text("print('hi')\n")
    return root


def test_digest_is_stable_and_ignores_bytecode(tmp_path: Path) -> None:
    root = tree(tmp_path)
    first = source_digest(root, PINS)
    (root / "harness" / "__pycache__").mkdir()
    (root / "harness" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert source_digest(root, PINS) == first


def test_digest_moves_with_sources_and_pins(tmp_path: Path) -> None:
    root = tree(tmp_path)
    first = source_digest(root, PINS)
    (root / "harness" / "agent" / "main.py").write_text("print('changed')\n")
    second = source_digest(root, PINS)
    assert second != first
    assert source_digest(root, ("pyyaml==6.0.2",)) != second
    (root / "harness" / "agent" / "new.py").write_text("")
    assert source_digest(root, PINS) != second


def test_pins_follow_the_host_environment() -> None:
    pins = pinned_requirements(("pyyaml", "surely-not-installed-podlab-x"))
    assert pins[0].startswith("pyyaml==") and pins[1] == "surely-not-installed-podlab-x"


def test_tar_is_reproducible(tmp_path: Path) -> None:
    wheels = tmp_path / "w"
    wheels.mkdir()
    (wheels / "b.whl").write_bytes(b"b")
    (wheels / "a.whl").write_bytes(b"a")
    _tar(wheels, tmp_path / "1.tar")
    (wheels / "a.whl").touch()  # a new mtime must not change the archive
    _tar(wheels, tmp_path / "2.tar")
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()
    with tarfile.open(tmp_path / "1.tar") as tar:
        assert tar.getnames() == ["a.whl", "b.whl"]


def test_count_hosts_walks_nested_groups(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text(
        "all:\n  children:\n    c1:\n      hosts: {a: {}, b: {}}\n"
        "    workers:\n      hosts: {b: {}}\n      children:\n        deep: {hosts: {c: {}}}\n"
    )
    assert count_hosts(inv) == 3
    inv.write_text("[ini]\nhost1\n")
    assert count_hosts(inv) == 0


def test_dependency_closure_pins_what_the_requirements_pull_in() -> None:
    closure = dependency_closure(("pydantic",))
    names = [p.split("==")[0] for p in closure]
    assert names == sorted(names) and "pydantic" in names
    assert {"pydantic-core", "typing-extensions", "annotated-types"} <= set(names)
    assert all("==" in p for p in closure), closure
    assert dependency_closure(("surely-not-installed-podlab-x",)) == (
        "surely-not-installed-podlab-x",
    )
