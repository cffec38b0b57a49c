"""The command line and logging every podlab daemon shares (agent, mesh syncer,
controller manager): ``--config``, ``--check`` (the deploy's health probe) and
``--log-level``, with log lines on stdout for the supervisor to keep."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
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
        ap.add_argument(
            "--ready-file",
            metavar="PATH",
            help="once ready, write here its pid, the moment and the configuration's "
            "sha256 (JSON; what the deploy's service call reads after a restart)",
        )
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=args.log_level.upper(), format=LOG_FORMAT)
    return args


class ReadyFile:
    """A daemon's own word that it is ready (``--ready-file PATH``), for the deploy.

    After a restart the deploy's service call (``podlab_service``'s ``ready_file``) waits
    for this file instead of running ``--check`` as a new Python process on the node:
    a mode switch restarts every agent and syncer at once on the same cores, and each
    check's start cost 0.2-0.3 s of CPU (docs/conformance.md, "A switch in a few
    seconds"). The file says which process wrote it (``pid``), when (``at``, epoch
    seconds: the call accepts only a moment after the old process was gone) and the
    sha256 of the configuration file the daemon read at its start (the call accepts
    only the one it has just written). The daemon writes it once its own proof is in
    etcd (the agent: its first heartbeat; the syncer: its clusterinfo), so the file
    means what ``--check --since`` would have seen there.
    """

    def __init__(self, path: str | None, config: str | Path) -> None:
        self.path = Path(path) if path else None
        self.digest = ""
        if self.path is not None:
            self.digest = hashlib.sha256(Path(config).read_bytes()).hexdigest()

    def write(self) -> None:
        """Write (atomically) the note; a failure is logged, the daemon goes on."""
        if self.path is None:
            return
        note = {"pid": os.getpid(), "at": time.time(), "config_sha256": self.digest}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(note) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            logging.getLogger("podlab").error("cannot write the ready file %s: %s", self.path, exc)
