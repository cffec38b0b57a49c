#!/usr/bin/python3
"""Ansible module: converge one podlab service under supervisord or systemd, in one call.

It writes the service's definition (a supervisord program file or a systemd unit)
and the files the service reads (its config) only where their content differs,
applies a changed definition, restarts the service when its files changed (or
``restart`` asks), starts it if it is not running, waits until it runs and, when
asked (``ready_argv``), until the service itself says it is ready. One remote call
instead of a template, a copy, three commands and a polled health check per
service: re-deploy time is mostly per-call cost.

A restart is a stop and a start with the moment in between noted: the readiness
command gets it (``--since EPOCH``), so it can accept only proof the new process
wrote (the old one is gone by then) and not a fresh record its predecessor left.
"""

from __future__ import annotations

import configparser
import hashlib
import http.client
import json
import os
import subprocess
import tempfile
import time
import xmlrpc.client
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: podlab_service
short_description: Converge one podlab service under supervisord or systemd
description:
  - Writes the service definition and its files where they differ, (re)starts the
    service when they changed, and waits until it is running.
options:
  name: {description: program or unit base name, required: true, type: str}
  manager: {description: service manager, required: true, type: str,
            choices: [supervisord, systemd]}
  definition_path: {description: program file or unit path, required: true, type: path}
  definition: {description: content of definition_path, required: true, type: str}
  files: {description: path -> content of files the service reads, type: dict, default: {}}
  restart: {description: restart even if nothing here changed, type: bool, default: false}
  supervisor_conf: {description: supervisord.conf for supervisorctl, type: path}
  log: {description: the service's log file, quoted on failure, type: path}
  wait: {description: seconds to wait for RUNNING / active, type: float, default: 20}
  state: {description: "present (converge and run) or absent (stop it, remove its definition)",
          type: str, default: present, choices: [present, absent]}
  ready_argv: {description: "a command that exits 0 once the service is ready, re-run
               0.5 s apart until it does (one that waits itself returns at once); when this
               call (re)started the service and ready_since is true, --since EPOCH (the
               moment the old process was gone) is appended", type: list, elements: str,
               default: []}
  ready_since: {description: append --since EPOCH after a (re)start, type: bool, default: true}
  ready_file: {description: "after a (re)start, wait for this file instead of running
               ready_argv: the service writes it once ready (JSON: pid, at, config_sha256;
               harness/daemon.py ReadyFile) and only a note written after the old process
               was gone, by the process just started (under supervisord), naming the
               sha256 of ready_config's content is accepted. Without a restart ready_argv
               runs as before", type: path}
  ready_config: {description: "the key of files whose sha256 the ready file must name",
                 type: path}
  ready_wait: {description: seconds the service has to become ready, type: float, default: 60}
  require_path: {description: "a path that must exist on the node, else the call fails with
                 require_msg before it writes or restarts anything (a mode switch: the
                 wheelhouse being deployed is installed)", type: path}
  require_msg: {description: the failure message when require_path is missing, type: str}
"""

RETURN = r"""
written: {description: paths whose content changed, type: list}
action: {description: what was done to the service, type: str}
state: {description: final state (RUNNING / active), type: str}
since: {description: "when the old process was gone (epoch s) if this call (re)started it, else 0",
        type: float}
ready: {description: the ready command's output, type: str}
"""


def write_if_different(path: str, content: str, check: bool) -> bool:
    """Replace ``path`` atomically with ``content`` unless it already holds exactly that."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == content:
                return False
    except FileNotFoundError:
        pass
    if check:
        return True
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".podlab-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def unit_name(program: str) -> str:
    """The systemd unit of a program: ``etcd`` → ``podlab-etcd.service``.

    A program already named ``podlab-…`` keeps its name (``podlab-agent.service``,
    never ``podlab-podlab-agent.service``); the supervise role's unit path follows
    the same rule.
    """
    base = program if program.startswith("podlab-") else f"podlab-{program}"
    return f"{base}.service"


CTL_TIMEOUT_S = 600


# supervisord's faults, as supervisorctl words them (supervisor.xmlrpc.Faults)
FAULT_WORDS = {10: "no such process", 60: "already started", 70: "not running"}
# supervisord states of a program that is not (or no longer) starting by itself
DEAD_STATES = ("BACKOFF", "EXITED", "FATAL", "STOPPED")


class Manager:
    """supervisorctl or systemctl, reduced to what converging one service needs.

    Under supervisord the frequent calls (start, stop, status of one program) go to its
    XML-RPC interface directly, over the socket supervisorctl would use: each
    supervisorctl is a Python start on the node (~0.16 s of CPU), two per restart, and a
    whole-lab switch restarts eight services at once on the same cores. The rarer ones
    (update, which re-reads the configuration) stay supervisorctl's.
    """

    def __init__(self, module: AnsibleModule) -> None:
        self.m = module
        p = module.params
        self.name, self.kind, self.conf = p["name"], p["manager"], p["supervisor_conf"]
        self._proxy: Any = None  # None: not tried yet; False: not available
        self.spawned = False  # started without waiting out startsecs (restart(nowait=True))

    def rpc(self) -> Any:
        """supervisord's XML-RPC proxy (its [supervisorctl] serverurl), or None where the
        supervisor package or that setting is missing (then supervisorctl does it all)."""
        if self._proxy is None:
            self._proxy = False
            try:
                from supervisor.xmlrpc import SupervisorTransport

                conf = configparser.RawConfigParser(strict=False, interpolation=None)
                conf.read(self.conf)
                url = conf.get("supervisorctl", "serverurl")
                transport = SupervisorTransport(None, None, url)
                self._proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport)
            except (ImportError, OSError, configparser.Error, ValueError):
                pass
        return self._proxy or None

    def rpc_ctl(self, verb: str, name: str) -> tuple[int, str]:
        """``supervisorctl start|stop|status NAME`` over XML-RPC, answered as it answers;
        ``spawn``: start without waiting for it to run past startsecs."""
        sup = self.rpc().supervisor
        try:
            if verb == "status":
                return 0, f"{name} {sup.getProcessInfo(name)['statename']}"
            if verb == "stop":
                # not stopProcess(name, True): supervisord answers that call by polling
                # in a busy loop until the process is gone (0.3 s of its CPU for a 1-s
                # stop; 0.2 s per node in a whole-lab switch); a look every 20 ms here
                # costs it next to nothing (docs/conformance.md, "A switch in a few seconds")
                sup.stopProcess(name, False)
                deadline = time.monotonic() + CTL_TIMEOUT_S
                while (state := sup.getProcessInfo(name)["statename"]) == "STOPPING":
                    if time.monotonic() > deadline:
                        return 1, f"{name}: ERROR (still stopping after {CTL_TIMEOUT_S} s)"
                    time.sleep(0.02)
                if state != "STOPPED":
                    return 1, f"{name}: ERROR (stopped as {state})"
                return 0, f"{name}: stopped"
            sup.startProcess(name, verb == "start")
            return 0, f"{name}: started"
        except xmlrpc.client.Fault as f:
            return 1, f"{name}: ERROR ({FAULT_WORDS.get(f.faultCode, f.faultString)})"
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as exc:
            return 7, f"supervisord ({self.conf}) did not answer: {exc}"

    def ctl(self, *args: str) -> tuple[int, str]:
        if self.kind == "supervisord":
            if len(args) == 2 and args[0] in ("start", "spawn", "stop", "status") and self.rpc():
                return self.rpc_ctl(*args)
            argv = ["supervisorctl", "-c", self.conf, *args]
        else:
            argv = ["systemctl", *args]
        # A bound against a hung call, not a performance limit: in an emulated guest
        # starved of CPU (load 35-50 on the host) `systemctl daemon-reload` took
        # longer than 60 s and failed a deploy that would have gone on.
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=CTL_TIMEOUT_S, check=False
        )
        return proc.returncode, (proc.stdout + proc.stderr).strip()

    @property
    def unit(self) -> str:
        return unit_name(self.name)

    def pid(self) -> int:
        """The program's pid as supervisord knows it (0 if unknown or not supervisord)."""
        if self.kind != "supervisord" or not self.rpc():
            return 0
        try:
            return int(self.rpc().supervisor.getProcessInfo(self.name).get("pid") or 0)
        except (xmlrpc.client.Fault, OSError, http.client.HTTPException,
                xmlrpc.client.ProtocolError, ValueError):  # fmt: skip
            return 0

    def state(self) -> str:
        if self.kind == "supervisord":
            _, out = self.ctl("status", self.name)
            fields = out.split()
            return fields[1] if len(fields) > 1 else out
        _, out = self.ctl("is-active", self.unit)
        return out

    def running(self, state: str) -> bool:
        return state in ("RUNNING", "active")

    @property
    def running_state(self) -> str:
        """What ``state`` says of a running service."""
        return "RUNNING" if self.kind == "supervisord" else "active"

    def apply_definition(self) -> float:
        """Apply a new definition, (re)starting the service; when the old process was gone."""
        if self.kind == "supervisord":
            self.ctl("stop", self.name)  # "no such process" when new: nothing to stop
            gone = time.time()
            self.must("update", self.name)  # adds, or re-adds with the new definition
            return gone
        self.must("daemon-reload")
        self.must("enable", self.unit)
        self.must("stop", self.unit)
        gone = time.time()
        self.must("start", self.unit)
        return gone

    def restart(self, nowait: bool = False) -> float:
        """Stop, note the moment, start (what ``restart`` does, with the moment known).

        ``nowait`` (a service with a readiness command): under supervisord over XML-RPC,
        return once the new process is spawned, not once it has run for startsecs (and
        supervisord's loop has noticed: up to a second more). The readiness wait then
        watches the program's state beside the check (``wait_ready``), so a process
        that dies at start still fails the call at once."""
        target = self.name if self.kind == "supervisord" else self.unit
        self.must("stop", target)
        gone = time.time()
        if nowait and self.kind == "supervisord" and self.rpc():
            self.must("spawn", target)
            self.spawned = True
        else:
            self.must("start", target)
        return gone

    def start(self) -> None:
        self.must("start", self.name if self.kind == "supervisord" else self.unit)

    def remove(self, path: str) -> None:
        """Stop the service (its stop signal, TERM) and forget it."""
        if self.kind == "supervisord":
            self.ctl("stop", self.name)
            os.remove(path)
            self.must("update", self.name)  # drops the removed program
        else:
            self.ctl("disable", "--now", self.unit)
            os.remove(path)
            self.must("daemon-reload")

    def must(self, *args: str) -> None:
        rc, out = self.ctl(*args)
        benign = (args[0] in ("start", "spawn") and "already started" in out) or (
            args[0] == "stop" and "not running" in out
        )
        if rc != 0 and not benign:
            self.m.fail_json(msg=f"{self.kind}: {' '.join(args)} failed (rc={rc}): {out}")


def tail(path: str | None, lines: int = 15) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return " | ".join(f.read().splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "manager": {"type": "str", "required": True, "choices": ["supervisord", "systemd"]},
            "definition_path": {"type": "path", "required": True},
            "definition": {"type": "str", "required": True},
            "files": {"type": "dict", "default": {}},
            "restart": {"type": "bool", "default": False},
            "supervisor_conf": {"type": "path"},
            "log": {"type": "path"},
            "wait": {"type": "float", "default": 20.0},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "ready_argv": {"type": "list", "elements": "str", "default": []},
            "ready_since": {"type": "bool", "default": True},
            "ready_wait": {"type": "float", "default": 60.0},
            "ready_file": {"type": "path"},
            "ready_config": {"type": "path"},
            "require_path": {"type": "path"},
            "require_msg": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p, check = module.params, module.check_mode
    if p["require_path"] and not os.path.exists(p["require_path"]):
        module.fail_json(
            msg=p["require_msg"] or f"{p['require_path']} does not exist", refused=True
        )
    if p["state"] == "absent":
        there = os.path.exists(p["definition_path"])
        if there and not check:
            Manager(module).remove(p["definition_path"])
        module.exit_json(changed=there, written=[], action="removed" if there else "", state="")
    written = [path for path, text in p["files"].items() if write_if_different(path, text, check)]
    defined = write_if_different(p["definition_path"], p["definition"], check)
    if defined:
        written.append(p["definition_path"])
    mgr = Manager(module)
    if check:
        module.exit_json(changed=bool(written) or p["restart"], written=written, action="check")
    action, since = "", 0.0
    if defined:
        since = mgr.apply_definition()
        action = "defined"
    elif written or p["restart"]:
        since = mgr.restart(nowait=bool(p["ready_argv"] or p["ready_file"]))
        action = "restarted"
    ready = ""
    if mgr.spawned:  # not waited for: its readiness first, watching that it stays up
        ready = wait_ready(module, since, mgr)
    # a start that succeeded returned once the service ran (supervisord: past startsecs):
    # no status call (each supervisorctl is a Python start on the node)
    state = mgr.running_state if action == "restarted" and not mgr.spawned else mgr.state()
    if mgr.spawned and state == "STARTING":
        # the process just spawned has proved itself ready (wait_ready fails otherwise)
        # and still lives: supervisord calls it RUNNING only once it has lived startsecs
        # (1 s) and its loop has looked (up to 1 s more), a wait that proves nothing
        # more (0.7-1 s of each syncer's call in a switch: its note comes 0.3 s after
        # its restart)
        state = mgr.running_state
    if not mgr.running(state) and state not in ("STARTING", "activating"):
        since = since or time.time()
        mgr.start()
        action = action or f"started (was {state})"
    deadline = time.monotonic() + p["wait"]
    while not mgr.running(state) and time.monotonic() < deadline:
        time.sleep(0.25)
        state = mgr.state()
    if not mgr.running(state):
        module.fail_json(
            msg=f"{p['name']} is {state}, not running, after {p['wait']:.0f}s; "
            f"last lines of its log: {tail(p['log'])}",
            written=written,
            state=state,
        )
    if (p["ready_argv"] or p["ready_file"]) and not mgr.spawned:
        ready = wait_ready(module, since)
    module.exit_json(
        changed=bool(action or written),
        written=written,
        action=action,
        state=state,
        since=since,
        ready=ready,
    )


class ServiceDied(Exception):
    """The service left its start (BACKOFF, EXITED, FATAL …) while its readiness was awaited."""


def run_ready(argv: list[str], timeout: float, mgr: Manager | None) -> tuple[int, str]:
    """Run the readiness command once; with ``mgr``, look at the service's state every
    0.1 s meanwhile and stop at once (ServiceDied) if it is no longer starting."""
    if mgr is None:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        return proc.returncode, proc.stdout + proc.stderr
    deadline = time.monotonic() + timeout
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as child:
        while True:
            try:
                out, _ = child.communicate(timeout=0.1)
                return child.returncode, out
            except subprocess.TimeoutExpired:
                pass
            state = mgr.state()
            if state in DEAD_STATES or time.monotonic() > deadline:
                child.kill()
                child.communicate()
                if state in DEAD_STATES:
                    raise ServiceDied(state)
                raise subprocess.TimeoutExpired(argv, timeout)


def wait_ready(module: AnsibleModule, since: float, mgr: Manager | None = None) -> str:
    """Run the service's readiness command until it passes; fail with its last words
    (with ``mgr``: also as soon as the service dies while starting)."""
    p = module.params
    if p["ready_file"] and since:
        return wait_ready_file(module, since, mgr)
    if not p["ready_argv"]:
        return ""
    argv = list(p["ready_argv"])
    if since and p["ready_since"]:
        argv += ["--since", f"{since:.6f}"]
    deadline = time.monotonic() + p["ready_wait"]
    out = "not run"
    while True:
        left = deadline - time.monotonic()
        try:
            rc, out = run_ready(argv, max(left, 1.0), mgr)
            if rc != 0 and mgr is not None and (state := mgr.state()) in DEAD_STATES:
                raise ServiceDied(state)  # a check that answers at once: look after it
        except subprocess.TimeoutExpired:
            out = f"{argv[0]} did not answer in {p['ready_wait']:.0f}s"
            break
        except ServiceDied as died:
            module.fail_json(
                msg=f"{p['name']} is {died}, not running, while starting; "
                f"last lines of its log: {tail(p['log'])}",
                since=since,
                state=str(died),
            )
        except OSError as exc:
            module.fail_json(msg=f"{p['name']}: cannot run {argv[0]}: {exc}")
        out = out.strip()
        if rc == 0:
            return out
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(0.5, left))  # and once more at the deadline: the whole wait is given
    module.fail_json(
        msg=f"{p['name']} runs but is not ready after {p['ready_wait']:.0f}s: {out}; "
        f"last lines of its log: {tail(p['log'])}",
        since=since,
    )
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (not gone, not a zombie its supervisor has yet to reap)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def judge_note(text: str, since: float, digest: str, pid: int) -> tuple[bool, str]:
    """Whether a ready file's content proves the restarted service ready, and why not."""
    try:
        note = json.loads(text)
        at, wrote_pid, named = float(note["at"]), int(note["pid"]), str(note["config_sha256"])
    except (ValueError, KeyError, TypeError):
        return False, "its ready file is not readable yet"
    if at < since:
        return False, f"its ready file is the previous process's ({since - at:.1f}s older)"
    if pid and wrote_pid != pid:
        return False, f"its ready file was written by pid {wrote_pid}, not {pid}"
    if digest and named != digest:
        return False, "its ready file names another configuration than the one written"
    return True, f"ready: pid {wrote_pid}, {at - since:.2f}s after the restart"


def wait_ready_file(module: AnsibleModule, since: float, mgr: Manager | None) -> str:
    """Wait until the service's ready file proves the new process ready (``judge_note``),
    reading it every 50 ms in this process: no Python start on the node, no call to
    supervisord while the new process lives (its pid is looked at in /proc). Fails at
    once when that process dies, and after ready_wait with the file's last verdict."""
    p = module.params
    digest = ""
    if p["ready_config"]:
        text = (p["files"] or {}).get(p["ready_config"])
        if text is None:
            module.fail_json(msg=f"ready_config {p['ready_config']} is not one of files")
        digest = hashlib.sha256(str(text).encode("utf-8")).hexdigest()
    pid = mgr.pid() if mgr is not None and mgr.spawned else 0
    deadline = time.monotonic() + p["ready_wait"]
    why = "no ready file yet"
    while True:
        try:
            with open(p["ready_file"], encoding="utf-8") as f:
                ok, why = judge_note(f.read(), since, digest, pid)
            if ok:
                return why
        except FileNotFoundError:
            pass
        except OSError as exc:
            why = f"its ready file cannot be read: {exc}"
        if pid and not alive(pid):
            state = mgr.state() if mgr is not None else "gone"
            module.fail_json(
                msg=f"{p['name']} is {state}, not running, while starting (pid {pid} "
                f"exited); last lines of its log: {tail(p['log'])}",
                since=since,
                state=state,
            )
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    module.fail_json(
        msg=f"{p['name']} runs but is not ready after {p['ready_wait']:.0f}s: {why}; "
        f"last lines of its log: {tail(p['log'])}",
        since=since,
    )
    return why


if __name__ == "__main__":
    main()
