"""playbooks/library/podlab_service.py: the write-only-when-different step idempotence rests on."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

LIBRARY = Path(__file__).resolve().parents[2] / "playbooks" / "library" / "podlab_service.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("podlab_service", LIBRARY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writes_only_when_content_differs(tmp_path: Path) -> None:
    svc = load()
    path = tmp_path / "etc" / "agent.yaml"
    assert svc.write_if_different(str(path), "mode: vxlan\n", check=False)  # creates dirs too
    inode = path.stat().st_ino
    assert not svc.write_if_different(str(path), "mode: vxlan\n", check=False)
    assert path.stat().st_ino == inode, "an unchanged file was rewritten"
    assert svc.write_if_different(str(path), "mode: host-gw\n", check=False)
    assert path.read_text() == "mode: host-gw\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in path.parent.iterdir()] == ["agent.yaml"], "temp file left behind"


def test_check_mode_reports_without_writing(tmp_path: Path) -> None:
    svc = load()
    path = tmp_path / "x.conf"
    assert svc.write_if_different(str(path), "a\n", check=True)
    assert not path.exists()
    path.write_text("a\n")
    assert not svc.write_if_different(str(path), "a\n", check=True)


def test_log_tail_names_a_missing_log(tmp_path: Path) -> None:
    svc = load()
    log = tmp_path / "etcd.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    assert svc.tail(str(log), 2) == "line 28 | line 29"
    assert "no log" in svc.tail(os.fspath(tmp_path / "missing.log"))


def test_unit_names_are_prefixed_once() -> None:
    svc = load()
    assert svc.unit_name("etcd") == "podlab-etcd.service"
    assert svc.unit_name("podlab-agent") == "podlab-agent.service"
    assert svc.unit_name("podlab-mesh") == "podlab-mesh.service"


def run_module(tmp_path: Path, **args: object) -> dict[str, object]:
    """The module as Ansible runs it: a process reading its arguments file."""
    argfile = tmp_path / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run(
        [sys.executable, str(LIBRARY), str(argfile)], capture_output=True, text=True, check=False
    )
    return dict(json.loads(proc.stdout))


def test_a_missing_required_path_fails_before_anything_is_written(tmp_path: Path) -> None:
    """A mode switch onto a node without the wheelhouse's marker: refused, nothing written
    (the agent's configuration stays the one its running agent has)."""
    config, definition = tmp_path / "agent.yaml", tmp_path / "conf.d" / "agent.conf"
    common = {
        "name": "podlab-agent",
        "manager": "supervisord",
        "definition_path": str(definition),
        "definition": "[program:podlab-agent]\n",
        "files": {str(config): "mode: bgp\n"},
        "supervisor_conf": str(tmp_path / "supervisord.conf"),
        "require_msg": "this node does not run the sources being deployed (wheelhouse w1)",
    }
    out = run_module(tmp_path, **common, require_path=str(tmp_path / "marker"))
    assert out.get("failed") and out.get("refused"), out
    assert out["msg"] == common["require_msg"]
    assert not config.exists() and not definition.exists()
    # the control: with the marker there the same call goes on (check mode: it only
    # reports what it would write)
    (tmp_path / "marker").touch()
    out = run_module(
        tmp_path, **common, require_path=str(tmp_path / "marker"), _ansible_check_mode=True
    )
    assert not out.get("failed") and out["changed"] and out["action"] == "check", out
