"""The command line and logging every podlab daemon shares (agent, mesh syncer,
controller manager): ``--config``, ``--check`` (the deploy's health probe) and
``--log-level``, with log lines on stdout for the supervisor to keep."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def parse_args(
    prog: str,
    doc: str | None,
    default_config: Path | str,
    config_help: str,
    check_help: str,
    argv: list[str] | None,
    check_waits: bool = False,
) -> argparse.Namespace:
    """Parse a daemon's arguments and configure logging at the level asked for.

    ``check_waits``: the daemon's ``--check`` also takes ``--since EPOCH`` (pass only
    on proof written at or after that moment: a restarted daemon's, not its
    predecessor's) and ``--wait SECONDS`` (keep watching until it passes), which the
    deploy's readiness wait uses instead of re-running the check every half second.
    """
    ap = argparse.ArgumentParser(prog=prog, description=(doc or prog).splitlines()[0])
    ap.add_argument("--config", default=default_config, help=config_help)
    ap.add_argument("--check", action="store_true", help=check_help)
    if check_waits:
        ap.add_argument(
            "--since",
            type=float,
            default=0.0,
            metavar="EPOCH",
            help="with --check: only proof written at or after this time (seconds) counts",
        )
        ap.add_argument(
            "--wait",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="with --check: wait up to this long for it to pass (watching etcd)",
        )
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=args.log_level.upper(), format=LOG_FORMAT)
    return args
