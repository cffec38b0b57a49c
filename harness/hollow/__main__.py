"""``python -m harness.hollow``: the hollow-node runner process (supervised on a lab node).

Example (what ``podlab hollow`` starts)::

    python -m harness.hollow --cluster c1 --etcd http://10.0.0.1:2379 --nodes 100 \\
        --underlay-ip 10.0.0.2 --pod-cidr 10.244.0.0/16 --mode vxlan --lease-ttl 60
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.hollow.model import MODES, HollowConfig, HollowError
from harness.hollow.runner import serve


def parse(argv: list[str] | None) -> tuple[Path | None, HollowConfig]:
    p = argparse.ArgumentParser(prog="python -m harness.hollow", description=__doc__)
    p.add_argument("--cluster", required=True)
    p.add_argument("--etcd", required=True, action="append", help="etcd endpoint (repeatable)")
    p.add_argument("--nodes", type=int, help="how many (or the count in --nodes-file)")
    p.add_argument(
        "--nodes-file",
        type=Path,
        help="a file holding the count, re-read every second: write it to resize",
    )
    p.add_argument("--underlay-ip", required=True, help="the runner host's underlay address")
    p.add_argument("--pod-cidr", default="10.244.0.0/16")
    p.add_argument("--node-prefix", type=int, default=24)
    p.add_argument("--mode", default="vxlan", choices=MODES)
    p.add_argument("--segment", default="fabric")
    p.add_argument("--prefix", default="hollow", help="node names are <prefix>-<i>")
    p.add_argument("--lease-ttl", type=int, default=60, help="the agents' lease_ttl_s")
    p.add_argument("--pending-s", type=float, default=0.0, help="stage delay to Pending")
    p.add_argument("--running-s", type=float, default=0.0, help="stage delay Pending→Running")
    p.add_argument("--delete-s", type=float, default=0.0, help="stage delay for a delete")
    a = p.parse_args(argv)
    nodes = a.nodes
    if a.nodes_file is not None:
        try:
            nodes = int(a.nodes_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise HollowError(f"--nodes-file {a.nodes_file}: no count in it ({exc})") from exc
    if nodes is None:
        raise HollowError("give --nodes N or --nodes-file PATH")
    return a.nodes_file, HollowConfig(
        cluster=a.cluster,
        etcd_endpoints=a.etcd,
        nodes=nodes,
        underlay_ip=a.underlay_ip,
        pod_cidr=a.pod_cidr,
        node_prefix=a.node_prefix,
        mode=a.mode,
        segment=a.segment,
        prefix=a.prefix,
        lease_ttl_s=a.lease_ttl,
        pending_s=a.pending_s,
        running_s=a.running_s,
        delete_s=a.delete_s,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        nodes_file, cfg = parse(argv)
        cfg.check()
    except (HollowError, ValueError) as exc:
        print(f"podlab hollow: {exc}", file=sys.stderr)
        return 2
    serve(cfg, nodes_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
