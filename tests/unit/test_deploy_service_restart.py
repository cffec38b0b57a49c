"""podlab_service against a real (private) supervisord: a restart notes the moment the old
process was gone, and the ready command gets it (``--since``) to tell new from old.

The module runs as Ansible runs it (a process reading its arguments file); the
service is a small script that logs its start and its TERM with the time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "playbooks" / "library" / "podlab_service.py"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("supervisord") is None, reason="supervisord not installed"),
]

SERVICE = """
import signal, sys, time
log = sys.argv[1]
def note(what):
    with open(log, "a") as f:
        f.write(f"{what} {time.time():.6f}\\n")
def term(*_):
    note("stop")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
note("start")
while True:
    time.sleep(1)
"""

# Ready when the service's last start is at or after --since (as the agent's first
# heartbeat is); without --since, when it started at all. Prints what it saw.
READY = """
import sys
log, since = sys.argv[1], 0.0
if "--since" in sys.argv:
    since = float(sys.argv[sys.argv.index("--since") + 1])
starts = [float(l.split()[1]) for l in open(log) if l.startswith("start")]
ok = bool(starts) and starts[-1] >= since
print(f"ready={ok} since={since:.6f} last_start={starts[-1] if starts else 0:.6f}")
sys.exit(0 if ok else 1)
"""


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Path]:
    """A supervisord of our own (its socket, conf.d and logs under tmp_path)."""
    conf = tmp_path / "supervisord.conf"
    (tmp_path / "conf.d").mkdir()
    conf.write_text(
        f"[unix_http_server]\nfile={tmp_path}/s.sock\n"
        f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/s.pid\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{tmp_path}/s.sock\n"
        f"[include]\nfiles = {tmp_path}/conf.d/*.conf\n"
    )
    proc = subprocess.Popen(["supervisord", "-n", "-c", str(conf)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["supervisorctl", "-c", str(conf), "pid"], capture_output=True,
                             check=False).returncode != 0:  # fmt: skip
            assert time.monotonic() < deadline, "supervisord did not come up"
            time.sleep(0.1)
        yield conf
    finally:
        proc.terminate()  # our own supervisord, by its pid; it stops its programs
        proc.wait(timeout=30)


def service_args(tmp_path: Path, conf: Path, argv: str, startsecs: int, extra: str = ""
                 ) -> dict[str, Any]:  # fmt: skip
    """The module's arguments for the test program ``svc`` (``argv`` after the Python)
    under our supervisord; each test adds its files and readiness."""
    return {
        "name": "svc",
        "manager": "supervisord",
        "definition_path": str(tmp_path / "conf.d" / "svc.conf"),
        "definition": (
            f"[program:svc]\ncommand={sys.executable} {argv}\n"
            f"startsecs={startsecs}\nstopsignal=TERM\nautostart=true\n{extra}"
        ),
        "supervisor_conf": str(conf),
        "log": str(tmp_path / "svc.log"),
        "wait": 20,
    }


def run_module(
    tmp_path: Path,
    conf: Path,
    config: str,
    ready_ok: bool = True,
    ready_wait: float = 20,
    env: dict[str, str] | None = None,
    python: list[str] | None = None,
) -> dict[str, Any]:
    (tmp_path / "svc.py").write_text(SERVICE)
    (tmp_path / "ready.py").write_text(READY if ready_ok else "import sys; sys.exit(3)")
    events = tmp_path / "events"
    args = {
        **service_args(tmp_path, conf, f"{tmp_path}/svc.py {events}", startsecs=0),
        "files": {str(tmp_path / "svc.yaml"): config},
        "ready_argv": [sys.executable, str(tmp_path / "ready.py"), str(events)],
        "ready_wait": ready_wait,
    }
    argfile = tmp_path / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run(
        [*(python or [sys.executable]), str(LIBRARY), str(argfile)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert proc.stdout.strip().startswith("{"), proc.stderr
    return dict(json.loads(proc.stdout))


# Debian's supervisor package, which the node's /usr/bin/python3 (Ansible's interpreter
# there) imports; this test's interpreter is the venv's
DIST_SUPERVISOR = Path("/usr/lib/python3/dist-packages/supervisor")


def without_supervisor(tmp_path: Path) -> list[str]:
    """How to run the module with the supervisor package unimportable in its own process
    only (a node whose python3 lacks it; the supervisorctl it runs keeps its own): a
    ``supervisor`` without ``xmlrpc`` first on the module's sys.path."""
    lib = tmp_path / "nosup"
    (lib / "supervisor").mkdir(parents=True, exist_ok=True)
    (lib / "supervisor" / "__init__.py").write_text("")
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(lib)!r}); sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def via_xmlrpc(tmp_path: Path, supervisorctl: bool) -> dict[str, str]:
    """The module's environment with the supervisor package importable (it then talks to
    supervisord over XML-RPC) and, unless ``supervisorctl``, no PATH to find one with."""
    if not DIST_SUPERVISOR.is_dir():
        pytest.skip(f"no {DIST_SUPERVISOR} (Debian's supervisor package) to import")
    lib = tmp_path / "pylib"
    if not lib.exists():
        lib.mkdir()
        (lib / "supervisor").symlink_to(DIST_SUPERVISOR)
    env = {**os.environ, "PYTHONPATH": str(lib)}
    if not supervisorctl:
        env["PATH"] = str(tmp_path / "empty")  # a supervisorctl call would fail the module
    return env


def times(tmp_path: Path, what: str) -> list[float]:
    lines = (tmp_path / "events").read_text().splitlines()
    return [float(ln.split()[1]) for ln in lines if ln.startswith(what)]


@pytest.mark.parametrize("via", ["supervisorctl", "xmlrpc"])
def test_a_restart_hands_the_ready_command_the_moment_between_old_and_new(
    tmp_path: Path, supervisor: Path, via: str
) -> None:
    """``xmlrpc``: the node's case (its python3 imports supervisor): the definition goes
    through supervisorctl (update), the status and the restart without any (no PATH)."""
    env = via_xmlrpc(tmp_path, supervisorctl=True) if via == "xmlrpc" else None
    python = None if via == "xmlrpc" else without_supervisor(tmp_path)
    first = run_module(tmp_path, supervisor, "mode: vxlan\n", env=env, python=python)
    assert first.get("action") == "defined" and first["since"] > 0, first
    assert first["since"] <= times(tmp_path, "start")[0] and "ready=True" in first["ready"]

    env = via_xmlrpc(tmp_path, supervisorctl=False) if via == "xmlrpc" else None
    again = run_module(tmp_path, supervisor, "mode: vxlan\n", env=env, python=python)
    assert (again["action"], again["since"], again["changed"]) == ("", 0.0, False), again
    assert "since=0.000000" in again["ready"]  # the plain check: no --since

    switched = run_module(tmp_path, supervisor, "mode: bgp\n", env=env, python=python)
    assert switched["action"] == "restarted", switched
    old_stop, new_start = times(tmp_path, "stop")[-1], times(tmp_path, "start")[-1]
    assert old_stop <= switched["since"] <= new_start, (old_stop, switched, new_start)
    assert f"since={switched['since']:.6f}" in switched["ready"]


def test_a_service_that_is_not_ready_fails_the_call(tmp_path: Path, supervisor: Path) -> None:
    t0 = time.monotonic()
    res = run_module(tmp_path, supervisor, "mode: vxlan\n", ready_ok=False, ready_wait=2)
    assert res.get("failed") and "svc runs but is not ready after 2s" in res["msg"], res
    assert time.monotonic() - t0 >= 2.0  # re-run until the time was up
    control = run_module(tmp_path, supervisor, "mode: vxlan\n")
    assert not control.get("failed"), control


CRASHY = """
import sys, time
if "crash" in open(sys.argv[1]).read():
    sys.exit(1)  # dies at once: before startsecs, so supervisord backs off
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("via", ["supervisorctl", "xmlrpc"])
def test_a_service_that_dies_at_its_restart_fails_the_call_at_once(
    tmp_path: Path, supervisor: Path, via: str
) -> None:
    """A restart that does not wait out startsecs (xmlrpc) still notices a process that
    dies while starting: it watches the state beside the readiness check, and fails long
    before the readiness wait is over (as supervisorctl's waiting start does)."""
    (tmp_path / "svc.py").write_text(CRASHY)
    config = tmp_path / "svc.yaml"
    args = {
        **service_args(tmp_path, supervisor, f"{tmp_path}/svc.py {config}", startsecs=1),
        # ready once the config says ok: never, after the crash
        "ready_argv": [sys.executable, "-c",
                       f"import sys; sys.exit(0 if 'ok' in open({str(config)!r}).read() else 1)"],
        "ready_wait": 60,
    }  # fmt: skip

    def call(text: str) -> dict[str, Any]:
        argfile = tmp_path / "args.json"
        argfile.write_text(
            json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "files": {str(config): text}}})
        )
        env = via_xmlrpc(tmp_path, True) if via == "xmlrpc" else None
        python = [sys.executable] if via == "xmlrpc" else without_supervisor(tmp_path)
        proc = subprocess.run([*python, str(LIBRARY), str(argfile)],
                              capture_output=True, text=True, check=False, env=env)  # fmt: skip
        return dict(json.loads(proc.stdout))

    first = call("ok\n")  # the control: a service that starts and is ready passes
    assert not first.get("failed") and first["action"] == "defined", first
    t0 = time.monotonic()
    crashed = call("crash\n")
    took = time.monotonic() - t0
    assert crashed.get("failed") and crashed.get("action") is None, crashed
    assert took < 15, f"the call took {took:.1f} s: it waited for readiness, not the state"
    if via == "xmlrpc":
        assert "not running, while starting" in crashed["msg"], crashed
    else:
        assert "start svc failed" in crashed["msg"], crashed  # its waiting start saw it


# Writes its ready note (harness.daemon.ReadyFile, as the agent and the syncer do) a
# moment after its start, from the configuration file it names; "stale" in that file:
# it never writes one; "crash": it dies at once.
NOTING = """
import sys, time
from harness.daemon import ReadyFile
config, ready = sys.argv[1], sys.argv[2]
text = open(config).read()
if "crash" in text:
    sys.exit(1)
time.sleep(0.3)
if "stale" not in text:
    ReadyFile(ready, config).write()
while True:
    time.sleep(1)
"""


def call_with_ready_file(
    tmp_path: Path, conf: Path, text: str, ready_config: str | None = None, wait: float = 20
) -> tuple[dict[str, Any], float]:
    """The module with ``ready_file`` (no ready_argv: a check process would fail, no PATH
    to supervisorctl after the first call); its answer and how long it took."""
    (tmp_path / "svc.py").write_text(NOTING)
    config, ready = tmp_path / "svc.yaml", tmp_path / "run" / "svc.ready"
    path = f'environment=PYTHONPATH="{Path(__file__).resolve().parents[2]}"\n'
    args = {
        **service_args(tmp_path, conf, f"{tmp_path}/svc.py {config} {ready}", 1, path),
        "files": {str(config): text},
        "ready_file": str(ready),
        "ready_config": ready_config or str(config),
        "ready_wait": wait,
    }
    argfile = tmp_path / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    first = not (tmp_path / "conf.d" / "svc.conf").exists()
    env = via_xmlrpc(tmp_path, supervisorctl=first)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(LIBRARY), str(argfile)],
                          capture_output=True, text=True, check=False, env=env)  # fmt: skip
    assert proc.stdout.strip().startswith("{"), proc.stderr
    return dict(json.loads(proc.stdout)), time.monotonic() - t0


def test_a_restart_waits_for_the_new_process_s_ready_file(tmp_path: Path, supervisor: Path) -> None:
    """After a restart the call reads the ready note itself: it passes on the note the
    process just spawned wrote, naming the configuration just written, after the old
    process was gone; without a restart it checks nothing more (no ready_argv)."""
    first, _ = call_with_ready_file(tmp_path, supervisor, "mode: vxlan\n")
    assert not first.get("failed") and first["action"] == "defined", first
    note = json.loads((tmp_path / "run" / "svc.ready").read_text())
    assert note["at"] >= first["since"] > 0 and first["ready"].startswith("ready: pid"), first

    again, _ = call_with_ready_file(tmp_path, supervisor, "mode: vxlan\n")
    assert (again["action"], again["changed"], again["ready"]) == ("", False, ""), again

    switched, _ = call_with_ready_file(tmp_path, supervisor, "mode: bgp\n")
    assert switched["action"] == "restarted" and not switched.get("failed"), switched
    new = json.loads((tmp_path / "run" / "svc.ready").read_text())
    assert new["pid"] != note["pid"] and new["at"] >= switched["since"] > note["at"], (note, new)
    assert f"pid {new['pid']}" in switched["ready"], switched
    assert new["config_sha256"] != note["config_sha256"]


def test_a_ready_file_that_is_not_the_new_process_s_fails_the_call(
    tmp_path: Path, supervisor: Path
) -> None:
    """The old process's note (the new one writes none) and a note naming another
    configuration than the one written are refused until the wait is over."""
    ok, _ = call_with_ready_file(tmp_path, supervisor, "mode: vxlan\n")
    assert not ok.get("failed"), ok
    stale, took = call_with_ready_file(tmp_path, supervisor, "mode: bgp stale\n", wait=2)
    assert stale.get("failed") and "not ready after 2s" in stale["msg"], stale
    assert "previous process's" in stale["msg"] and took >= 2.0, stale
    other = tmp_path / "other.yaml"
    wrong, _ = call_with_ready_file(
        tmp_path, supervisor, "mode: udp\n", ready_config=str(other), wait=2
    )
    assert wrong.get("failed") and "is not one of files" in wrong["msg"], wrong


def test_a_ready_file_naming_another_configuration_fails_the_call(
    tmp_path: Path, supervisor: Path
) -> None:
    """The service read a configuration other than the one this call wrote (here: the
    note's digest is of its file, the call's of a text that differs)."""
    ok, _ = call_with_ready_file(tmp_path, supervisor, "mode: vxlan\n")
    assert not ok.get("failed"), ok
    # the judge alone, on the note just written and a digest of other bytes
    spec = importlib.util.spec_from_file_location("podlab_service", LIBRARY)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    note = (tmp_path / "run" / "svc.ready").read_text()
    data = json.loads(note)
    verdict = mod.judge_note(note, data["at"] - 1, "0" * 64, data["pid"])
    assert verdict == (False, "its ready file names another configuration than the one written")
    assert mod.judge_note(note, data["at"] - 1, data["config_sha256"], data["pid"] + 1)[0] is False
    assert mod.judge_note(note, data["at"] - 1, data["config_sha256"], data["pid"])[0] is True
    assert mod.judge_note("{", 0.0, "", 0) == (False, "its ready file is not readable yet")


def test_a_service_that_dies_before_its_ready_file_fails_the_call_at_once(
    tmp_path: Path, supervisor: Path
) -> None:
    ok, _ = call_with_ready_file(tmp_path, supervisor, "mode: vxlan\n")
    assert not ok.get("failed"), ok
    crashed, took = call_with_ready_file(tmp_path, supervisor, "crash\n", wait=60)
    assert crashed.get("failed") and "not running, while starting" in crashed["msg"], crashed
    assert took < 15, f"the call took {took:.1f} s: it waited for the file, not the process"
