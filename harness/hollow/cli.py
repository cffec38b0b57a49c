"""``podlab hollow LAB --cluster C --nodes N``: resize a running lab's hollow nodes.

Runs ``playbooks/hollow.yml`` (the ``hollow`` role only) on cluster C's
control-plane node with ``podlab_hollow_nodes=N``: the runner runs there under
the node's supervisor (N > 0; a new N restarts it with that size) or is stopped
and removed (N = 0: SIGTERM, every lease revoked). Then waits until the cluster's
etcd shows exactly N hollow node records. The size is checked first against the
cluster's pod CIDR and real nodes and against this machine's limits
(harness/load/preflight.py), so nothing starts for a size that cannot fit.
"""

from __future__ import annotations

import argparse
import ipaddress
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from harness.deploy.deploy import request_for, source_root
from harness.deploy.runner import run_playbook
from harness.errors import LabError, UserError
from harness.hollow.model import MODES
from harness.load import preflight
from harness.store import Store, StoreError
from harness.store.keys import nodes_prefix

PLAYBOOK = "hollow.yml"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``hollow``."""
    p = sub.add_parser(
        "hollow",
        help="run N hollow nodes in a cluster of a running lab (0 removes them)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("lab")
    p.add_argument("--cluster", "-c", required=True)
    p.add_argument("--nodes", "-n", required=True, type=_count, metavar="N")
    p.add_argument("--inventory", "-i", metavar="FILE", help="the lab's inventory (default)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for N nodes")
    p.set_defaults(func=cmd_hollow)


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (use 0 or a positive integer)")
    return n


def cluster_of(inventory: Path, cluster: str) -> tuple[dict[str, Any], list[str], str]:
    """The cluster's group vars, its hosts and its control-plane host, from the inventory."""
    inv = yaml.safe_load(inventory.read_text()) or {}
    groups = inv.get("all", {}).get("children", {})
    if cluster not in groups or "podlab_cluster" not in groups[cluster].get("vars", {}):
        known = sorted(
            g for g, v in groups.items() if "podlab_cluster" in (v or {}).get("vars", {})
        )
        raise UserError(f"{inventory}: no cluster {cluster!r} (fix: use one of {', '.join(known)})")
    hosts = list(groups[cluster].get("hosts", {}))
    cps = [h for h in hosts if h in (groups.get("control_plane") or {}).get("hosts", {})]
    if len(cps) != 1:
        raise UserError(f"{inventory}: cluster {cluster} has no single control-plane host")
    return dict(groups[cluster]["vars"]), hosts, cps[0]


def check_fit(cvars: dict[str, Any], real: int, n: int, cluster: str) -> None:
    """Refuse a size the pod CIDR cannot hold beside the real nodes, or a mode we can't fake."""
    if n == 0:
        return
    if cvars.get("podlab_mode") not in MODES:
        raise UserError(
            f"cluster {cluster} runs mode {cvars.get('podlab_mode')}: hollow nodes support "
            f"{', '.join(MODES)} (fix: deploy the cluster in one of them)"
        )
    cidr = ipaddress.IPv4Network(str(cvars["podlab_pod_cidr"]))
    prefix = int(cvars.get("podlab_node_prefix", 24))
    free = 2 ** (prefix - cidr.prefixlen) - 1 - real
    if n > free:
        raise UserError(
            f"--nodes {n}: cluster {cluster}'s pod CIDR {cidr} leaves {max(free, 0)} "
            f"/{prefix} subnets beside its {real} real nodes (fix: ask for at most {max(free, 0)})"
        )


def count_hollow(store: Store, cluster: str) -> int:
    kvs, _ = store.get_prefix(nodes_prefix(cluster))
    return sum(1 for kv in kvs if _hollow(kv.value))


def _hollow(value: bytes) -> bool:
    try:
        return bool(yaml.safe_load(value).get("hollow"))
    except (ValueError, AttributeError, yaml.YAMLError):
        return False


def cmd_hollow(args: argparse.Namespace) -> int:
    req = request_for(args.lab, args.inventory, {})
    cvars, hosts, cp = cluster_of(req.inventory, args.cluster)
    check_fit(cvars, len(hosts), args.nodes, args.cluster)
    refused = preflight.problems(
        preflight.Need(hollow_nodes=args.nodes), preflight.Have.read(), f"--nodes {args.nodes}"
    )
    if refused:
        raise UserError(refused)
    playbooks = source_root() / "playbooks"
    result = run_playbook(
        playbooks / PLAYBOOK,
        req.inventory,
        req.lab_dir / "hollow",
        extravars={"podlab_hollow_nodes": args.nodes},
        limit=cp,
        forks=1,
        envvars={
            "ANSIBLE_CONFIG": str(playbooks / "ansible.cfg"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(req.lab_dir / "cp"),
            "ANSIBLE_ROLES_PATH": str(playbooks / "roles"),
        },
        timeout_s=300,
    )
    if not result.ok:
        raise LabError(f"podlab hollow failed on {cp}: " + "; ".join(map(str, result.failures)))
    store = Store([str(cvars["podlab_etcd_client_endpoint"])])
    deadline, got = time.monotonic() + args.timeout, -1
    while time.monotonic() < deadline:
        try:
            got = count_hollow(store, args.cluster)
        except StoreError:
            got = -1
        if got == args.nodes:
            break
        time.sleep(0.5)
    else:
        raise LabError(
            f"cluster {args.cluster} shows {got} hollow nodes, not {args.nodes}, after "
            f"{args.timeout:g} s (runner log: /var/log/podlab/podlab-hollow.log on {cp})"
        )
    Console(highlight=False).print(
        f"cluster {args.cluster}: {args.nodes} hollow nodes (runner on {cp}, "
        f"{result.duration_s:.1f}s in Ansible)"
    )
    return 0
