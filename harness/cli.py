"""The ``podlab`` command line: the only place that prints errors and exits.

Each area of podlab contributes its verbs through a ``register(subparsers)``
function listed in ``COMMAND_MODULES``; a verb's handler returns an exit status
or raises a PodlabError, which is printed here as one line per problem.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C's KeyboardInterrupt would be."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_like_ctrl_c() -> Iterator[None]:
    """While in the block, make SIGTERM and SIGHUP unwind podlab as Ctrl-C does.

    Python's default for both is to die on the spot, so a ``kill PID``, a closed
    terminal or a CI time-out left a half-built lab, a pytest run's pods and its
    results file behind; unwinding runs the same ``finally`` blocks and fixture
    finalizers as an interrupt. Only the first signal unwinds: a second one during
    that clean-up is reported and ignored (SIGKILL abandons it). A signal the
    caller ignores (``nohup``) stays ignored. A child forked from this process
    without an exec (a node's holder, a watchdog) inherits the handlers: there the
    signal does what the default does, so the child never runs this process's
    unwinding. The previous handlers come back at the end (``main`` also runs
    in-process, in tests).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()
    signals = (signal.SIGTERM, signal.SIGHUP)

    def as_default(signum: int) -> bool:
        if os.getpid() == owner:
            return False
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return True

    def unwind(signum: int, _frame: object) -> None:
        if as_default(signum):
            return
        for sig in signals:
            if signal.getsignal(sig) is unwind:
                signal.signal(sig, still_cleaning)
        raise Terminated(signum)

    def still_cleaning(signum: int, _frame: object) -> None:
        if not as_default(signum):
            err.print(
                f"{signal.Signals(signum).name} again: still cleaning up (SIGKILL abandons it)"
            )

    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        if previous[sig] is not signal.SIG_IGN:
            signal.signal(sig, unwind)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: not set from Python, nothing to put back
                signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with stop_like_ctrl_c():
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
    except Terminated as exc:
        err.print(f"terminated ({exc})")
        return 128 + exc.signum
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def _plain(problem: Problem) -> str:
    from rich.markup import escape

    return escape(problem_line(problem))


if __name__ == "__main__":
    sys.exit(main())
