"""harness/deploy/timeline.py: a deploy's event log split into start-up, tasks and the rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.deploy.timeline import format_timeline, load_events, timeline

T0 = "2026-12-05T12:00:"


def ev(n: int, event: str, at: float, **data: Any) -> dict[str, Any]:
    return {"counter": n, "event": event, "created": f"{T0}{at:09.6f}+00:00", "event_data": data}


def result(n: int, event: str, task: str, host: str, start: float, end: float) -> dict[str, Any]:
    return ev(
        n, event, end, task=task, task_uuid=task, host=host, play="p",
        resolved_action="ansible.builtin.command",
        start=f"{T0}{start:09.6f}+00:00", end=f"{T0}{end:09.6f}+00:00", duration=end - start,
    )  # fmt: skip


def run_events() -> list[dict[str, Any]]:
    """Start-up 2 s; task a on two hosts (1-2 s each); a 1 s gap; task b: one ran, one skipped."""
    return [
        ev(1, "playbook_on_start", 10.0),
        ev(2, "playbook_on_task_start", 12.0, task="a"),
        result(3, "runner_on_ok", "a", "h1", 12.0, 13.0),
        result(4, "runner_on_ok", "a", "h2", 12.5, 14.5),
        ev(5, "playbook_on_task_start", 15.5, task="b"),
        result(6, "runner_on_ok", "b", "h1", 15.5, 16.0),
        result(7, "runner_on_skipped", "b", "h2", 15.5, 15.6),
        ev(8, "playbook_on_stats", 16.5),
    ]


def test_the_split_adds_up() -> None:
    t = timeline(run_events())
    assert round(t.total_s, 3) == 6.5 and round(t.startup_s, 3) == 2.0
    assert round(t.busy_s, 3) == 3.0  # 12.0–14.5 and 15.5–16.0; the skip is no work
    assert round(t.controller_s, 3) == 1.5
    a, b = t.tasks
    assert (a.task, a.hosts, a.skipped, round(a.wall_s, 3), round(a.slowest_s, 3)) == (
        "a", 2, 0, 2.5, 2.0
    )  # fmt: skip
    assert (b.hosts, b.skipped) == (2, 1)
    assert [x.task for x in t.top(1)] == ["a"]
    assert "start-up  2.0 s" in format_timeline(t)[0]


def test_events_are_read_in_counter_order_and_a_torn_file_is_ignored(tmp_path: Path) -> None:
    d = tmp_path / "job_events"
    d.mkdir()
    for e in reversed(run_events()):
        (d / f"{e['counter']}-x.json").write_text(json.dumps(e))
    (d / "9-torn.json").write_text('{"counter": 9, "eve')
    assert [e["counter"] for e in load_events(tmp_path)] == list(range(1, 9))


def test_no_events_no_time() -> None:
    assert timeline([]).total_s == 0.0


def test_host_spans_follow_each_host_from_the_runs_start() -> None:
    from harness.deploy.timeline import format_spans, host_spans

    spans = host_spans(run_events(), "a")
    assert {h: (round(a, 3), round(b, 3)) for h, (a, b) in spans.items()} == {
        "h1": (2.0, 3.0),
        "h2": (2.5, 4.5),
    }
    assert list(host_spans(run_events(), "b")) == ["h1"]  # h2 skipped it: no work
    assert host_spans(run_events(), "c") == {} and host_spans([], "a") == {}
    line = format_spans("a", spans)
    assert "2 hosts" in line and "start  2.00– 2.50 s" in line and "longest 2.00 s" in line
    assert format_spans("c", {}) == "c: none ran"
