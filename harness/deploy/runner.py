"""The one wrapper over ``ansible_runner.run``: structured results, never parsed stdout.

Ansible's human output is for humans. This module listens to ansible-runner's
event stream instead: every task start, result, failure and unreachable host
arrives as a dict, which becomes a typed ``DeployEvent`` for live progress and,
at the end, a ``DeployResult`` with a per-host recap and the failures (host,
task, Ansible's message). The full event log stays in ansible-runner's
artifacts directory so a failed deploy can be read afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from harness.errors import LabError

# ansible-runner event names this wrapper turns into DeployEvent kinds.
_KINDS = {
    "playbook_on_play_start": "play",
    "playbook_on_task_start": "task",
    "runner_on_start": "start",
    "runner_on_ok": "ok",
    "runner_on_skipped": "skipped",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
}
_MESSAGE_MAX = 2000


@dataclass(frozen=True)
class DeployEvent:
    """One thing that happened, as progress displays need it."""

    kind: str  # play | task | start | ok | skipped | failed | unreachable
    host: str = ""
    task: str = ""
    changed: bool = False
    message: str = ""


@dataclass(frozen=True)
class Failure:
    """A task that failed (or a host that became unreachable), with Ansible's own words."""

    host: str
    task: str
    message: str
    unreachable: bool = False

    def __str__(self) -> str:
        what = "unreachable" if self.unreachable else "failed"
        return f"{self.host}: task '{self.task}' {what}: {self.message}"


@dataclass(frozen=True)
class HostRecap:
    """Ansible's end-of-play counters for one host, plus the last task it started."""

    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0
    last_task: str = ""

    @property
    def healthy(self) -> bool:
        return self.failed == 0 and self.unreachable == 0


@dataclass(frozen=True)
class DeployResult:
    """What a playbook run did: status, per-host recap, failures, where the log is."""

    status: str  # ansible-runner status: successful | failed | timeout | canceled
    rc: int
    hosts: dict[str, HostRecap]
    failures: tuple[Failure, ...]
    artifacts: Path
    duration_s: float
    plays: tuple[str, ...] = ()  # every play of the playbook, in order
    plays_run: tuple[str, ...] = ()  # the plays Ansible started

    @property
    def plays_not_run(self) -> tuple[str, ...]:
        """Plays the run never reached: Ansible stops when every host of a play failed."""
        return tuple(p for p in self.plays if p not in self.plays_run)

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0 and not self.failures

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())


def changed_tasks(events: Sequence[DeployEvent]) -> list[tuple[str, str]]:
    """(host, task) of every task that reported a change: what a no-change re-deploy
    (the idempotence check of every deploy path) must leave empty."""
    return sorted({(e.host, e.task) for e in events if e.kind == "ok" and e.changed})


@dataclass
class _Collector:
    """Turns raw ansible-runner events into DeployEvents, failures and last tasks."""

    on_event: Callable[[DeployEvent], None] | None
    failures: list[Failure] = field(default_factory=list)
    last_task: dict[str, str] = field(default_factory=dict)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    plays: list[str] = field(default_factory=list)

    def __call__(self, raw: Mapping[str, Any]) -> bool:
        name = raw.get("event", "")
        data = raw.get("event_data") or {}
        if name == "playbook_on_stats":
            self.stats = {k: v for k, v in data.items() if isinstance(v, dict)}
        kind = _KINDS.get(name)
        if kind is None:
            return True
        host = str(data.get("host", ""))
        task = str(data.get("task") or data.get("name") or data.get("play") or "")
        res = data.get("res") or {}
        if kind == "start" and host:
            self.last_task[host] = task
        if kind == "play":
            self.plays.append(task)
        message = ""
        if kind in ("failed", "unreachable"):
            if kind == "failed" and data.get("ignore_errors"):
                kind = "ok"  # a failure the play expects; Ansible counts it as ignored
            else:
                message = failure_message(res)
                self.failures.append(Failure(host, task, message, kind == "unreachable"))
        event = DeployEvent(kind, host, task, bool(res.get("changed")), message)
        if self.on_event is not None:
            self.on_event(event)
        return True  # keep every event in the artifacts directory

    def recap(self) -> dict[str, HostRecap]:
        hosts = sorted({h for counts in self.stats.values() for h in counts} | set(self.last_task))

        def n(key: str, host: str) -> int:
            return int(self.stats.get(key, {}).get(host, 0))

        return {
            h: HostRecap(
                host=h,
                ok=n("ok", h),
                changed=n("changed", h),
                failed=n("failures", h),
                unreachable=n("dark", h),
                skipped=n("skipped", h),
                rescued=n("rescued", h),
                ignored=n("ignored", h),
                last_task=self.last_task.get(h, ""),
            )
            for h in hosts
        }


def failure_message(res: Mapping[str, Any]) -> str:
    """Ansible's message for a failed result: ``msg``, then the command's stderr/stdout tail."""
    parts = []
    msg = res.get("msg")
    if msg:
        parts.append(str(msg).strip())
    for key in ("stderr", "stdout"):
        text = str(res.get(key) or "").strip()
        if text and text not in parts:
            parts.append(" | ".join(text.splitlines()[-5:]))
            break
    if not parts and res.get("results"):  # a loop: report the first failed item
        for item in res["results"]:
            if isinstance(item, Mapping) and item.get("failed"):
                return failure_message(item)
    text = "; ".join(parts) or "no message (see the event log)"
    return text if len(text) <= _MESSAGE_MAX else text[:_MESSAGE_MAX] + " …"


def run_playbook(
    playbook: Path,
    inventory: Path,
    private_data_dir: Path,
    *,
    extravars: Mapping[str, Any] | None = None,
    limit: str | None = None,
    forks: int = 5,
    envvars: Mapping[str, str] | None = None,
    on_event: Callable[[DeployEvent], None] | None = None,
    timeout_s: int = 1800,
) -> DeployResult:
    """Run ``playbook`` against ``inventory`` and return what happened, host by host.

    ``private_data_dir`` receives ansible-runner's artifacts (the JSON event log
    and Ansible's stdout); the ten most recent runs are kept.
    """
    private_data_dir.mkdir(parents=True, exist_ok=True)
    # ansible-runner writes env/extravars and env/envvars at a directory's first run and
    # reads them back at every later one, before the vars given here: a key the first run
    # gave and a later one does not (a per-cluster --mode gives no podlab_mode) would stay
    # in force. Each run states its vars whole.
    for stale in ("extravars", "envvars"):
        (private_data_dir / "env" / stale).unlink(missing_ok=True)
    bindir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_NOCOLOR": "1",
        **(envvars or {}),
    }
    collector = _Collector(on_event)
    started = time.monotonic()
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private_data_dir),
            playbook=str(playbook),
            inventory=str(inventory),
            extravars=dict(extravars or {}),
            limit=limit,
            forks=forks,
            envvars=env,
            event_handler=collector,
            quiet=True,
            rotate_artifacts=10,
            timeout=timeout_s,
        )
    except (OSError, RuntimeError, ValueError) as exc:
        raise LabError(f"ansible-runner could not start {playbook.name}: {exc}") from exc
    hosts = collector.recap()
    failures = list(collector.failures)
    if runner.status != "successful" and not failures:
        # Ansible stopped before any host failed (syntax error, bad inventory …):
        # the reason is only in its output, which we keep but do not parse.
        failures.append(Failure("(controller)", "(playbook)", _tail(runner)))
    return DeployResult(
        status=str(runner.status),
        rc=int(runner.rc if runner.rc is not None else 1),
        hosts=hosts,
        failures=tuple(failures),
        artifacts=Path(runner.config.artifact_dir),
        duration_s=time.monotonic() - started,
        plays=play_names(playbook),
        plays_run=tuple(collector.plays),
    )


def play_names(playbook: Path) -> tuple[str, ...]:
    """The names of a playbook's plays (our own YAML file, not Ansible's output), with
    those of the playbooks it imports (``import_playbook``, relative to it) in place."""
    try:
        data = yaml.safe_load(playbook.read_text())
    except (OSError, yaml.YAMLError):
        return ()
    if not isinstance(data, list):
        return ()
    names: list[str] = []
    for play in data:
        if not isinstance(play, dict):
            continue
        imported = play.get("import_playbook") or play.get("ansible.builtin.import_playbook")
        if imported:
            names += play_names(playbook.parent / str(imported))
        else:
            names.append(str(play.get("name", "")))
    return tuple(names)


def _tail(runner: Any) -> str:
    """Last lines of Ansible's output, quoted verbatim for a controller-side error."""
    try:
        text = Path(runner.config.artifact_dir, "stdout").read_text(errors="replace")
    except OSError:
        return f"ansible-playbook ended {runner.status} (rc={runner.rc})"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Ansible's own error block (e.g. a YAML error) starts with [ERROR]: quote from there.
    start = next((i for i, ln in enumerate(lines) if ln.startswith("[ERROR]")), len(lines) - 6)
    quoted = lines[max(0, start) : max(0, start) + 6]
    return " | ".join(quoted) or f"ansible-playbook ended {runner.status} (rc={runner.rc})"
