"""`podlab test`: run the shipped conformance suites against a lab, with JUnit XML and results JSON.

It is ``pytest --pyargs harness.conformance.suites`` with podlab's plugin and
options, run in this process. Exit status is pytest's (0 all passed, 1 some
failed, 2 interrupted or usage error, 5 nothing collected).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from harness.errors import UserError

SUITES = "harness.conformance.suites"
PLUGIN = "harness.conformance.plugin"


def plugin_installed() -> bool:
    """Whether pytest loads our plugin by itself (the ``pytest11`` entry point is installed)."""
    from importlib.metadata import entry_points

    return any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's verbs to the `podlab` parser."""
    p = sub.add_parser(
        "test",
        help="run the conformance suites against a lab",
        description="Run podlab's conformance suites (pytest) against a lab that is up "
        "(--lab) or one built from a topology (--topology), over one or more datapath "
        "modes; write results JSON and JUnit XML to --results.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--lab", metavar="NAME", help="a lab that is up and deployed")
    where.add_argument("--topology", metavar="FILE", help="build, deploy, test, tear down")
    p.add_argument("--mode", action="append", default=[], metavar="MODE",
                   help="datapath mode (repeatable; MODE+wireguard to encrypt); the lab is "
                   "re-deployed with each in turn. Default: the lab's own mode")  # fmt: skip
    p.add_argument("--matrix", choices=("default", "full"),
                   help="default: every mode, light checks in each, heavy ones once per mode "
                   "family (the cover); full: every mode with and without WireGuard, every "
                   "check in each. With --mode: that policy over the modes given")  # fmt: skip
    p.add_argument(
        "--cluster",
        metavar="NAME",
        help="test only this cluster of the lab (runs per cluster can share a lab)",
    )
    p.add_argument(
        "--part", metavar="K/N", help="run the K-th of N parts of the matrix (one per cluster, say)"
    )
    p.add_argument(
        "--entry",
        metavar="MODE",
        help="lockstep: only this entry of the matrix (the lab runs it already)",
    )
    p.add_argument(
        "--deal",
        metavar="K/N",
        help="lockstep: only the K-th of N shares of the entry's in-cluster scenarios",
    )
    p.add_argument(
        "--scope",
        choices=("cluster", "lab"),
        help="only per-cluster scenarios, or only those needing the whole lab",
    )
    p.add_argument(
        "--ssh-keep",
        metavar="ROLE",
        help="lockstep: keep this role's ssh masters for its next phase",
    )
    p.add_argument(
        "--lab-decisions",
        action="store_true",
        help="lockstep, with --scope cluster: also record the entry's whole-lab scenarios "
        "(none runs in it)",
    )
    p.add_argument(
        "--quiet-lock",
        metavar="FILE",
        help="take turns with other runs: quiet checks hold this lock alone",
    )
    p.add_argument("--results", metavar="DIR", default="reports/results",
                   help="where results JSON and JUnit XML go (default: %(default)s)")  # fmt: skip
    p.add_argument("--keep-lab", action="store_true", help="leave a --topology lab up")
    p.add_argument("--thorough", action="store_true", help="more pods, streams and seconds")
    p.add_argument("--tput-rounds", type=int, metavar="N",
                   help="rounds of the interleaved throughput comparison (default 5)")  # fmt: skip
    p.add_argument("--tput-seconds", type=int, metavar="S",
                   help="seconds per iperf3 run in those rounds (default 1)")  # fmt: skip
    p.add_argument("-k", metavar="EXPR", help="only tests matching EXPR (pytest -k)")
    p.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first failure")
    p.add_argument("-q", "--quiet", action="store_true", help="less output")
    p.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARG",
                   help="further pytest arguments, after --")  # fmt: skip
    p.set_defaults(func=cmd_test)


def pytest_argv(args: argparse.Namespace, stamp: str | None = None) -> list[str]:
    """The pytest command line ``podlab test`` runs (pure, for tests)."""
    results = Path(args.results)
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.cluster:
        stamp = f"{stamp}-{args.cluster}"
    # Options as --opt=VALUE: pytest takes a lone path-like argument for its rootdir.
    # Hypothesis's plugin (a dev dependency of podlab's own tests, loaded into every session)
    # does nothing for the suites but import hypothesis for its terminal summary: 0.2 s with
    # bytecode, 2.5-3 s without (PYTHONDONTWRITEBYTECODE), in each run of a lockstep phase.
    argv = ["--pyargs", SUITES, "-rfEs", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
            f"--results={results}", f"--junitxml={results / f'junit-{stamp}.xml'}"]  # fmt: skip
    if not plugin_installed():
        argv[0:0] = ["-p", PLUGIN]
    if args.lab:
        argv.append(f"--lab={args.lab}")
    if args.topology:
        if not Path(args.topology).is_file():
            raise UserError(f"--topology {args.topology}: no such file")
        argv.append(f"--topology={args.topology}")
    argv += [f"--mode={mode}" for mode in args.mode]
    if args.matrix:
        argv.append(f"--matrix={args.matrix}")
    if args.cluster:
        argv.append(f"--cluster={args.cluster}")
    if args.part:
        argv.append(f"--part={args.part}")
    if args.scope:
        argv.append(f"--scope={args.scope}")
    if getattr(args, "entry", None):
        argv.append(f"--entry={args.entry}")
    if getattr(args, "deal", None):
        argv.append(f"--deal={args.deal}")
    if args.quiet_lock:
        argv.append(f"--quiet-lock={args.quiet_lock}")
    if getattr(args, "ssh_keep", None):
        argv.append(f"--ssh-keep={args.ssh_keep}")
    if getattr(args, "lab_decisions", False):
        argv.append("--lab-decisions")
    if args.keep_lab:
        argv.append("--keep-lab")
    if args.thorough:
        argv.append("--thorough")
    if getattr(args, "tput_rounds", None):
        argv.append(f"--tput-rounds={args.tput_rounds}")
    if getattr(args, "tput_seconds", None):
        argv.append(f"--tput-seconds={args.tput_seconds}")
    if args.k:
        argv += ["-k", args.k]
    if args.exitfirst:
        argv.append("-x")
    argv.append("-q" if args.quiet else "-v")
    return argv + list(args.pytest_args)


def cmd_test(args: argparse.Namespace) -> int:
    import pytest

    argv = pytest_argv(args)
    Path(args.results).mkdir(parents=True, exist_ok=True)
    return int(pytest.main(argv))
