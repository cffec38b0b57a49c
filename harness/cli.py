"""The ``podlab`` command line: the only place that prints errors and exits.

Each area of podlab contributes its verbs through a ``register(subparsers)``
function listed in ``COMMAND_MODULES``; a verb's handler returns an exit status
or raises a PodlabError, which is printed here as one line per problem.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rich.console import Console

from harness.errors import PodlabError, Problem, ToolError, UserError, problem_line

# Explicit registry of modules that add verbs; no scanning, no import-time magic.
COMMAND_MODULES = (
    "harness.topology.cli",
    "harness.lab.cli",
    "harness.inventory.cli",
    "harness.deploy.cli",
    "harness.api.cli",
    "harness.api.workloads",
    "harness.api.mesh",
    "harness.report.cli",
    "harness.conformance.cli",
    "harness.conformance.cni.cli",
    "harness.hollow.cli",
    "harness.load.cli",
)

err = Console(stderr=True, highlight=False, soft_wrap=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podlab",
        description="Build pod-network labs, deploy them, test them, report on them.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/] {_plain(problem)}", markup=True)
        return exc.exit_code
    except ToolError as exc:
        err.print(f"[red]error:[/] {exc}", markup=True)
        return exc.exit_code
    except PodlabError as exc:
        err.print(f"[red]error:[/] {exc}", markup=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def _plain(problem: Problem) -> str:
    from rich.markup import escape

    return escape(problem_line(problem))


if __name__ == "__main__":
    sys.exit(main())
