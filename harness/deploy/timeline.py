"""Where a deploy's seconds went, from ansible-runner's event log (never Ansible's stdout).

Every ``runner_on_*`` event of ``artifacts/<ident>/job_events/`` carries the
host's ``start``, ``end`` and ``duration`` of one task; the play and task start
events carry when the controller began them. From those this module tells apart:

- ``startup``: from ansible-playbook's first event to its first task start
  (Python imports, inventory, the playbook parsed);
- per task, its wall time (first host start to last host end), the slowest
  host's own duration and how many hosts ran it (a skip is an event too);
- ``controller``: the time between tasks in which no host ran anything (the
  strategy's bookkeeping, dynamic includes, templating);
- ``total``: first to last event.

Used by ``bench/bench_switch_cost.py`` to show where a mode switch's time goes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

_RESULTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")


@dataclass(frozen=True)
class TaskTime:
    """One task across the hosts that ran (or skipped) it."""

    play: str
    task: str
    action: str
    hosts: int
    skipped: int
    wall_s: float  # first host start → last host end
    slowest_s: float  # the longest single host's duration


@dataclass(frozen=True)
class Timeline:
    """A playbook run's time split into start-up, tasks and controller gaps."""

    total_s: float
    startup_s: float
    tasks: tuple[TaskTime, ...]
    busy_s: float  # union of the intervals in which some host ran a task

    @property
    def controller_s(self) -> float:
        """What is neither start-up nor a host running a task."""
        return max(0.0, self.total_s - self.startup_s - self.busy_s)

    def top(self, n: int = 8) -> list[TaskTime]:
        """The ``n`` tasks that took the most wall time."""
        return sorted(self.tasks, key=lambda t: t.wall_s, reverse=True)[:n]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def load_events(artifacts: Path) -> list[dict[str, Any]]:
    """The events of one run (``artifacts`` is ``DeployResult.artifacts``), in order."""
    events = []
    for path in (artifacts / "job_events").glob("*.json"):
        try:
            events.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a partly written event of a run that was killed
    return sorted(events, key=lambda e: int(e.get("counter", 0)))


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def timeline(events: list[dict[str, Any]]) -> Timeline:
    """Split a run's events (``load_events``) into start-up, per-task times and the rest."""
    stamps = [_ts(e["created"]) for e in events if e.get("created")]
    if not stamps:
        return Timeline(0.0, 0.0, (), 0.0)
    first, last = min(stamps), max(stamps)
    task_starts = [_ts(e["created"]) for e in events if e.get("event") == "playbook_on_task_start"]
    startup = (min(task_starts) - first) if task_starts else last - first
    by_task: dict[str, list[dict[str, Any]]] = {}
    order: list[str] = []
    intervals: list[tuple[float, float]] = []
    for e in events:
        if e.get("event") not in _RESULTS:
            continue
        data = e.get("event_data") or {}
        key = str(data.get("task_uuid") or data.get("task"))
        if key not in by_task:
            by_task[key] = []
            order.append(key)
        by_task[key].append(e)
        if data.get("start") and data.get("end") and e.get("event") != "runner_on_skipped":
            intervals.append((_ts(data["start"]), _ts(data["end"])))
    tasks = []
    for key in order:
        rows = [r["event_data"] for r in by_task[key]]
        starts = [_ts(d["start"]) for d in rows if d.get("start")]
        ends = [_ts(d["end"]) for d in rows if d.get("end")]
        tasks.append(
            TaskTime(
                play=str(rows[0].get("play", "")),
                task=str(rows[0].get("task", "")),
                action=str(rows[0].get("resolved_action") or rows[0].get("task_action") or ""),
                hosts=len(rows),
                skipped=sum(r.get("event") == "runner_on_skipped" for r in by_task[key]),
                wall_s=(max(ends) - min(starts)) if starts and ends else 0.0,
                slowest_s=max((float(d.get("duration") or 0.0) for d in rows), default=0.0),
            )
        )
    return Timeline(last - first, startup, tuple(tasks), _union(intervals))


def format_timeline(t: Timeline, top: int = 8) -> list[str]:
    """Lines for a terminal: the split, then the slowest tasks."""
    lines = [
        f"total {t.total_s:5.1f} s = start-up {t.startup_s:4.1f} s + hosts busy "
        f"{t.busy_s:4.1f} s + controller between tasks {t.controller_s:4.1f} s "
        f"({len(t.tasks)} tasks)"
    ]
    for task in t.top(top):
        lines.append(
            f"  {task.wall_s:5.2f} s wall, slowest host {task.slowest_s:5.2f} s, "
            f"{task.hosts - task.skipped}/{task.hosts} ran: {task.task} ({task.action})"
        )
    return lines


def host_spans(events: list[dict[str, Any]], task_prefix: str) -> dict[str, tuple[float, float]]:
    """Per host, when it ran the tasks whose name starts with ``task_prefix`` (first start,
    last end), in seconds from the run's first event; skips are left out.

    A whole-lab switch reads as these spans: every agent's service call (restart and
    readiness wait) side by side, then each cluster's syncer's.
    """
    stamps = [_ts(e["created"]) for e in events if e.get("created")]
    if not stamps:
        return {}
    first = min(stamps)
    spans: dict[str, tuple[float, float]] = {}
    for e in events:
        data = e.get("event_data") or {}
        if e.get("event") not in _RESULTS or e.get("event") == "runner_on_skipped":
            continue
        if not str(data.get("task", "")).startswith(task_prefix):
            continue
        if not (data.get("start") and data.get("end")):
            continue
        a, b = _ts(data["start"]) - first, _ts(data["end"]) - first
        host = str(data.get("host", ""))
        old = spans.get(host)
        spans[host] = (min(a, old[0]), max(b, old[1])) if old else (a, b)
    return spans


def format_spans(label: str, spans: dict[str, tuple[float, float]]) -> str:
    """One line: ``label`` on N hosts, starts a–b s, ends c–d s (from the run's start)."""
    if not spans:
        return f"{label}: none ran"
    starts = [a for a, _ in spans.values()]
    ends = [b for _, b in spans.values()]
    longest = max(b - a for a, b in spans.values())
    return (
        f"{label} on {len(spans)} hosts: start {min(starts):5.2f}–{max(starts):5.2f} s, "
        f"end {min(ends):5.2f}–{max(ends):5.2f} s (longest {longest:4.2f} s)"
    )
