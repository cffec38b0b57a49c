"""``podlab cni-test``: the black-box CNI spec suite against plugins, one column per plugin.

It is ``pytest --pyargs harness.conformance.cni.test_spec`` with the suite's
plugin, run in this process (root: it builds network namespaces). Targets are
``podlab`` (podlab-cni, bridge mode), ``podlab-routed``, ``reference`` (Debian's
bridge + host-local) or ``NAME=CONF_FILE:PLUGIN_DIR[:DIR…]``. ``--control``
targets run too and are shown, but do not decide the exit status: the
reference plugins are there to show the suite tests the spec (they pass it
where they keep the spec), not to be judged. Results JSON (scenario 35, one
"mode" per plugin) goes to ``--results`` for ``podlab report``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from harness.errors import UserError

SUITE = "harness.conformance.cni.test_spec"
PLUGIN = "harness.conformance.cni.plugin"
DEFAULT_TARGETS = ("podlab", "podlab-routed")
DEFAULT_CONTROLS = ("reference",)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "cni-test",
        help="run the CNI spec suite against CNI plugins (podlab-cni, reference, any)",
        description="Run podlab's black-box CNI spec suite (scenario 35) against plugin "
        "binaries in throwaway namespaces, spec version by version, and print one column "
        "per plugin. Needs root.",
    )
    judged, controls = ", ".join(DEFAULT_TARGETS), ", ".join(DEFAULT_CONTROLS)
    p.add_argument("--target", action="append", default=[], metavar="TARGET",
                   help="plugin to judge (repeatable): podlab, podlab-routed, reference, or "
                   f"NAME=CONF_FILE:PLUGIN_DIR[:DIR...] (default: {judged})")  # fmt: skip
    p.add_argument("--control", action="append", default=None, metavar="TARGET",
                   help="plugin run as a control: shown, not judged "
                   f"(default: {controls}; --control none for none)")  # fmt: skip
    p.add_argument("--results", metavar="DIR", default="reports/results",
                   help="where the results JSON goes (default: %(default)s)")  # fmt: skip
    p.add_argument("-k", metavar="EXPR", help="only rules matching EXPR (pytest -k)")
    p.add_argument("-q", "--quiet", action="store_true", help="less pytest output")
    p.set_defaults(func=cmd_cni_test)


def targets_of(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(judged targets, control targets) from the command line (pure, for tests)."""
    judged = list(args.target or DEFAULT_TARGETS)
    controls = list(DEFAULT_CONTROLS if args.control is None else args.control)
    controls = [c for c in controls if c != "none" and c not in judged]
    return judged, controls


def pytest_argv(args: argparse.Namespace, targets: list[str]) -> list[str]:
    argv = ["-p", PLUGIN, "--pyargs", SUITE, "-p", "no:cacheprovider", "-rfE",
            f"--cni-results={args.results}"]  # fmt: skip
    argv += [f"--cni-target={t}" for t in targets]
    if args.k:
        argv += ["-k", args.k]
    argv.append("-q" if args.quiet else "-v")
    return argv


class _Collect:
    """A pytest plugin object that remembers where the suite wrote its results."""

    path: str | None = None

    def pytest_sessionfinish(self, session: Any) -> None:
        from harness.conformance.cni.plugin import results_path

        self.path = results_path(session.config)


def cmd_cni_test(args: argparse.Namespace) -> int:
    import pytest

    if os.geteuid() != 0:
        raise UserError("podlab cni-test: run as root (it builds network namespaces)")
    judged, controls = targets_of(args)
    Path(args.results).mkdir(parents=True, exist_ok=True)
    collect = _Collect()
    code = int(pytest.main(pytest_argv(args, judged + controls), plugins=[collect]))
    if collect.path is None:
        return code if code else 1
    checks = json.loads(Path(collect.path).read_text()).get("checks", [])
    failed = print_table(checks, judged, controls)
    print(f"results: {collect.path}")
    if code not in (0, 1):  # interrupted, usage error, nothing collected
        return code
    return 1 if failed else 0


def table_rows(
    checks: list[dict[str, Any]], columns: list[str]
) -> list[tuple[str, list[tuple[str, str]]]]:
    """One row per rule: (rule, [(outcome, message) per column]) (pure, for tests)."""
    rules: dict[str, dict[str, tuple[str, str]]] = {}
    for c in checks:
        rules.setdefault(c["name"], {})[c["mode"]] = (c["outcome"], c.get("message", ""))
    return [(rule, [by.get(col, ("not run", "")) for col in columns]) for rule, by in rules.items()]


def print_table(checks: list[dict[str, Any]], judged: list[str], controls: list[str]) -> bool:
    """Print rule × plugin; return True if a judged plugin failed a rule."""
    from rich.console import Console
    from rich.table import Table

    columns = judged + controls
    table = Table(title="CNI spec suite (scenario 35)", show_lines=False)
    table.add_column("rule")
    for col in columns:
        table.add_column(col + (" (control)" if col in controls else ""))
    style = {"passed": "green", "failed": "red", "skipped": "dim", "not run": "dim"}
    word = {"passed": "pass", "failed": "FAIL", "skipped": "n/a", "not run": "not run"}
    failed = False
    notes: list[str] = []
    for rule, cells in table_rows(checks, columns):
        row = [rule]
        for col, (outcome, message) in zip(columns, cells, strict=True):
            row.append(f"[{style[outcome]}]{word[outcome]}[/]")
            if outcome == "failed":
                failed |= col in judged
                notes.append(f"{col} · {rule}: {message.splitlines()[0] if message else ''}")
        table.add_row(*row)
    console = Console(highlight=False)
    console.print(table)
    for note in notes:
        console.print(f"  [red]✗[/] {note}", soft_wrap=True)
    return failed
