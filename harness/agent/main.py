"""``podlab-agent``: one node's flanneld + CNI bridge plugin, driven by etcd.

The agent itself is ``harness.agent.agent`` (start-up, reconcile loop, SIGTERM);
``podlab-agent --check`` (``harness.agent.health``) exits 0 when this node's record
in etcd is fresh (the deploy role's health check). This entry imports the agent's
kernel code only to run the agent: the check, which a mode switch runs on every
node while every agent restarts, starts without it.
"""

from __future__ import annotations

import sys

from harness import daemon
from harness.agent.config import DEFAULT_PATH, ConfigError, load
from harness.agent.health import check, check_record

__all__ = ["check", "check_record", "main"]


def main(argv: list[str] | None = None) -> int:
    args = daemon.parse_args(
        "podlab-agent",
        __doc__,
        DEFAULT_PATH,
        "agent.yaml (default %(default)s)",
        "health check: exit 0 if fresh",
        argv,
        check_waits=True,
    )
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(f"podlab-agent: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return check(cfg, args.since, args.wait)
    ready = daemon.ReadyFile(args.ready_file, args.config)
    from harness.agent.agent import serve  # pyroute2, the datapaths, the proxies

    return serve(cfg, on_ready=ready.write)


if __name__ == "__main__":
    sys.exit(main())
