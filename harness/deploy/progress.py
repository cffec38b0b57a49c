"""Live deploy progress (hosts × tasks) and the end-of-run recap, drawn with rich.

The display only consumes ``DeployEvent``s and a ``DeployResult``; it never sees
Ansible's output. It is used by the CLI, the one place that prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harness.deploy.runner import DeployEvent, DeployResult


@dataclass
class _HostRow:
    ok: int = 0
    changed: int = 0
    skipped: int = 0
    failed: int = 0
    unreachable: bool = False
    task: str = ""


@dataclass
class LiveProgress:
    """A table with one row per host: counters so far and the task it is on."""

    console: Console
    play: str = ""
    tasks_seen: int = 0
    hosts: dict[str, _HostRow] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _live: Live | None = None

    def __enter__(self) -> LiveProgress:
        self._live = Live(
            self._render(), console=self.console, refresh_per_second=8, transient=False
        )
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)

    def __call__(self, event: DeployEvent) -> None:
        if event.kind == "play":
            self.play = event.task
        elif event.kind == "task":
            self.tasks_seen += 1
        elif event.host:
            row = self.hosts.setdefault(event.host, _HostRow())
            if event.kind == "start":
                row.task = event.task
            elif event.kind == "ok":
                row.ok += 1
                row.changed += int(event.changed)
            elif event.kind == "skipped":
                row.skipped += 1
            elif event.kind == "failed":
                row.failed += 1
                row.task = f"FAILED: {event.task}"
            elif event.kind == "unreachable":
                row.unreachable = True
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Group:
        elapsed = time.monotonic() - self.started
        head = Text.from_markup(
            f"[bold]{escape(self.play) or 'starting'}[/] · {self.tasks_seen} tasks · {elapsed:.0f}s"
        )
        table = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("host", "ok", "changed", "skipped", "failed", "task"):
            table.add_column(col, justify="right" if col not in ("host", "task") else "left")
        for host, row in sorted(self.hosts.items()):
            if row.unreachable:
                state = f"[red]UNREACHABLE[/] {escape(row.task)}"
            elif row.task.startswith("FAILED"):
                state = f"[red]{escape(row.task)}[/]"
            else:
                state = escape(row.task)
            table.add_row(
                host,
                str(row.ok),
                f"[yellow]{row.changed}[/]" if row.changed else "0",
                str(row.skipped),
                f"[red]{row.failed}[/]" if row.failed else "0",
                state,
            )
        return Group(head, table)


def recap_table(result: DeployResult) -> Table:
    """Ansible's PLAY RECAP as a table, with a plain verdict per host."""
    table = Table(title="deploy recap", title_justify="left", box=None, pad_edge=False)
    for col in ("host", "ok", "changed", "failed", "unreachable", "skipped", "result"):
        table.add_column(col, justify="left" if col in ("host", "result") else "right")
    failed_hosts = {f.host for f in result.failures}
    for host, r in sorted(result.hosts.items()):
        if r.unreachable:
            verdict = f"[red]unreachable[/] at '{escape(r.last_task)}'"
        elif r.failed or host in failed_hosts:
            verdict = f"[red]failed[/] at '{escape(r.last_task)}'"
        elif result.plays_not_run:
            verdict = f"[yellow]incomplete[/]: stopped after '{escape(r.last_task)}'"
        elif failed_hosts:
            verdict = "[green]completed[/] (other hosts failed)"
        else:
            verdict = "[green]ok[/]"
        table.add_row(
            host,
            str(r.ok),
            f"[yellow]{r.changed}[/]" if r.changed else "0",
            str(r.failed),
            str(r.unreachable),
            str(r.skipped),
            verdict,
        )
    return table
