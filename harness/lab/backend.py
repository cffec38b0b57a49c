"""The lab backend seam: one small Protocol and an explicit registry.

How to add a backend: write a module with a class that has ``name`` and
``up(request) -> UpResult`` (and ``down(lab)`` if it builds something), then
add it to ``BACKENDS`` below. No scanning, no import-time registration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.plan.model import LabPlan

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def no_progress(phase: str, done: int, total: int) -> None:
    """Default progress sink: silent."""


@dataclass(frozen=True)
class UpRequest:
    """What ``podlab up`` asks a backend for."""

    file: Path | None = None
    plan: LabPlan | None = None
    inventory: Path | None = None
    progress: Progress = no_progress
    fault: str | None = None  # tests only: fail on purpose after this phase


@dataclass(frozen=True)
class NodeRow:
    """One line of the summary table ``up`` and ``status`` print."""

    node: str
    role: str
    cluster: str
    mgmt: str
    underlay: str
    state: str = "up"


@dataclass
class UpResult:
    """What a backend did: which lab, whether it was already up, its nodes."""

    lab: str
    backend: str
    already_up: bool = False
    rows: list[NodeRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inventory: Path | None = None


class Backend(Protocol):
    """A way to get lab machines: build them (netns) or find them (ssh)."""

    name: str

    def up(self, request: UpRequest) -> UpResult: ...


def backends() -> dict[str, Callable[[], Backend]]:
    """The explicit registry (built lazily so importing the CLI stays cheap)."""
    from harness.lab.containerlab import ContainerlabBackend
    from harness.lab.netns import NetnsBackend
    from harness.lab.ssh import SshBackend
    from harness.lab.vm import VmBackend

    return {
        "netns": NetnsBackend,
        "vm": VmBackend,
        "ssh": SshBackend,
        "containerlab": ContainerlabBackend,
    }


BACKEND_NAMES = ("netns", "vm", "ssh", "containerlab")
