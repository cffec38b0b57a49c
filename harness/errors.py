"""Typed errors and a collector of located user problems.

Library code raises these; only ``harness.cli`` prints them and picks exit codes.
A user mistake must never surface as a traceback, so every problem carries the
file, the place (a data path such as ``topology.links[2]``), the YAML line where
known, and a hint saying how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One located user error: where it is, what is wrong, how to fix it."""

    file: str
    where: str
    message: str
    hint: str = ""
    line: int | None = None

    def __str__(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{loc}: {self.where}: {self.message}"
        return f"{text} (fix: {self.hint})" if self.hint else text


class PodlabError(Exception):
    """Base of every error podlab reports to the user without a traceback."""

    exit_code = 1


class UserError(PodlabError):
    """Bad input (topology, manifest, arguments): exit status 2."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(file="", where="", message=problems)]
        self.problems = problems
        super().__init__("\n".join(problem_line(p) for p in problems))


def problem_line(p: Problem) -> str:
    """One line for the user: located when the problem has a file."""
    if p.file:
        return str(p)
    text = f"{p.where}: {p.message}" if p.where else p.message
    return text + (f" (fix: {p.hint})" if p.hint else "")


class LabError(PodlabError):
    """A lab operation failed on the machine (not the user's input)."""


class ToolError(PodlabError):
    """An external tool failed or timed out; carries its argv and output."""

    def __init__(self, argv: list[str], returncode: int | None, output: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.output = output
        status = "timed out" if returncode is None else f"exited {returncode}"
        tail = output.strip().splitlines()[-3:] if output else []
        super().__init__(f"{argv[0]} {status}: {' | '.join(tail)}".rstrip(": "))


@dataclass
class Collector:
    """Gathers every problem in one pass so the user sees them all at once."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def add(self, where: str, message: str, hint: str = "", line: int | None = None) -> None:
        problem = Problem(self.file, where, message, hint, line)
        if problem not in self.problems:  # a group's label is inherited by many nodes
            self.problems.append(problem)

    def raise_if_any(self) -> None:
        if self.problems:
            raise UserError(list(self.problems))
