"""``python -m harness.refpath up|down``: build or remove a hand-built reference path here.

The conformance suite runs this on a lab node (over ssh, with the node's
installed podlab), the bench on the host; both print and read the same JSON.

    python -m harness.refpath up --spec '{"pods": "bridged", "encap": "vxlan", ...}' \
        [--tag T] [--server-port 5201] [--lifetime 600]     # prints the RefPath JSON
    python -m harness.refpath down --tag T                  # or --all
    python -m harness.refpath rounds --rounds 5 --seconds 1 \
        --target pod-pod=/run/netns/pod@10.244.2.5:5301 --target node-node=@10.100.0.3:5302
        # iperf3 TCP in interleaved rounds; prints {name: [IperfResult, ...]} as JSON

Run where the clients' namespaces are (the client node): the rounds then run
back to back without an ssh round trip between them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from harness.refpath import build, rounds
from harness.refpath.spec import RefSpec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.refpath")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build a reference and print its JSON")
    up.add_argument("--spec", required=True, help="RefSpec as JSON")
    up.add_argument("--tag", default="", help="1-8 lowercase letters/digits (default: new)")
    up.add_argument("--server-port", type=int, default=0, help="start iperf3 -s in pod b")
    up.add_argument("--lifetime", type=float, default=600, help="server lifetime, seconds")
    down = sub.add_parser("down", help="remove a reference")
    which = down.add_mutually_exclusive_group(required=True)
    which.add_argument("--tag")
    which.add_argument("--all", action="store_true", help="every reference found here")
    rnd = sub.add_parser("rounds", help="iperf3 to each target, interleaved rounds")
    rnd.add_argument("--target", action="append", required=True, help="NAME=NETNS@IP:PORT")
    rnd.add_argument("--rounds", type=int, default=5)
    rnd.add_argument("--seconds", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "up":
            spec = RefSpec.from_json(args.spec)
            tag = build.check_tag(args.tag or build.new_tag())
            path = build.build(spec, tag, args.server_port, args.lifetime)
            print(path.to_json())
        elif args.cmd == "rounds":
            targets = [rounds.Target.parse(t) for t in args.target]
            got = rounds.iperf_rounds(targets, args.rounds, args.seconds)
            print(json.dumps({k: [dataclasses.asdict(r) for r in v] for k, v in got.items()}))
        else:
            tags = build.existing_tags() if args.all else [build.check_tag(args.tag)]
            for tag in tags:
                removed = build.teardown(tag)
                print(f"reference {tag}: removed {len(removed)} namespaces")
    except ValueError as exc:
        print(f"refpath: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"refpath {args.cmd} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
