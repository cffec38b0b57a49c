"""Which lab, cluster and etcd endpoint an api verb talks to.

kubectl reads a kubeconfig; podlab reads what ``podlab up`` left behind: a lab
is up when ``.podlab/<lab>/state.json`` exists (under ``$PODLAB_HOME`` if set,
else the current directory), and the lab's Ansible inventory
``inventories/<lab>.yml`` names each cluster (hosts carry ``podlab_cluster``)
and its etcd endpoint reachable from the host (``podlab_etcd_client_endpoint``,
a group or host variable). ``--lab`` may be left out when one lab is up,
``--cluster`` when the lab has one cluster; ``--etcd URL`` skips discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError
from harness.inventory import project_home

ENDPOINT_VAR = "podlab_etcd_client_endpoint"
CLUSTER_VAR = "podlab_cluster"
SERVICE_CIDR_VAR = "podlab_service_cidr"


@dataclass(frozen=True)
class Target:
    """Where a verb reads and writes: a cluster's etcd, and the lab it belongs to."""

    cluster: str
    etcd_url: str
    lab: str | None = None
    lab_dir: Path | None = None
    service_cidr: str | None = None  # the inventory's podlab_service_cidr, when known


def podlab_home() -> Path:
    """The directory holding ``.podlab/`` and ``inventories/`` (one definition for podlab)."""
    return project_home()


def labs_up(home: Path) -> list[str]:
    """Names of labs whose state file exists, sorted."""
    root = home / ".podlab"
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/state.json"))


def resolve_target(
    lab: str | None, cluster: str | None, etcd: str | None, home: Path | None = None
) -> Target:
    """Resolve the user's ``--lab/--cluster/--etcd`` to one Target, or explain why not."""
    home = home or podlab_home()
    if etcd:
        if cluster:
            return Target(cluster, etcd, lab, home / ".podlab" / lab if lab else None)
        if not lab and not labs_up(home):
            raise UserError("--etcd needs --cluster when no lab is up (fix: add --cluster NAME)")
    lab = lab or _only_lab(home)
    lab_dir = home / ".podlab" / lab
    if not (lab_dir / "state.json").is_file():
        up = ", ".join(labs_up(home)) or "none"
        raise UserError(f"lab {lab!r} is not up (labs up: {up}; fix: `podlab up` it first)")
    endpoints = cluster_endpoints(home / "inventories" / f"{lab}.yml")
    cluster = cluster or _only_cluster(lab, endpoints)
    if cluster not in endpoints:
        raise UserError(
            f"lab {lab!r} has no cluster {cluster!r} (clusters: {', '.join(endpoints)}; "
            "fix: pick one with --cluster)"
        )
    url = etcd or endpoints[cluster]
    if not url:
        raise UserError(
            f"the inventory of lab {lab!r} gives no {ENDPOINT_VAR} for cluster {cluster!r} "
            "(fix: redeploy the lab, or pass --etcd URL)"
        )
    cidr = cluster_vars(home / "inventories" / f"{lab}.yml", SERVICE_CIDR_VAR).get(cluster)
    return Target(cluster, url, lab, lab_dir, cidr or None)


def _only_lab(home: Path) -> str:
    up = labs_up(home)
    if len(up) == 1:
        return up[0]
    if not up:
        raise UserError(f"no lab is up under {home} (fix: `podlab up TOPOLOGY`, or pass --etcd)")
    raise UserError(f"several labs are up ({', '.join(up)}); fix: choose one with --lab")


def _only_cluster(lab: str, endpoints: dict[str, str]) -> str:
    if len(endpoints) == 1:
        return next(iter(endpoints))
    if not endpoints:
        raise UserError(f"lab {lab!r} has no cluster in its inventory (no host sets {CLUSTER_VAR})")
    raise UserError(
        f"lab {lab!r} has clusters {', '.join(endpoints)}; fix: choose one with --cluster"
    )


def cluster_endpoints(inventory: Path) -> dict[str, str]:
    """Cluster name → etcd client endpoint ('' if unset), read from an Ansible YAML inventory."""
    return cluster_vars(inventory, ENDPOINT_VAR)


def cluster_vars(inventory: Path, var: str) -> dict[str, str]:
    """Cluster name → the value of host variable ``var`` ('' if unset) in an inventory.

    Variables inherit as Ansible does for this simple case: a host sees the vars
    of every group that lists it, its own vars winning.
    """
    try:
        data = yaml.safe_load(inventory.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"inventory {inventory} is missing (fix: `podlab up` writes it)") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"inventory {inventory} is not valid YAML: {exc}") from exc
    scopes: dict[str, list[dict[str, Any]]] = {}
    own: dict[str, dict[str, Any]] = {}
    for name, group in (data or {}).items():
        _walk_group(str(name), group, {}, scopes, own)
    out: dict[str, str] = {}
    for host in scopes:
        merged: dict[str, Any] = {}
        for scope in scopes[host]:
            merged.update(scope)
        merged.update(own.get(host, {}))
        cluster = merged.get(CLUSTER_VAR)
        if not cluster:
            continue
        url = str(merged.get(var) or "")
        if "{{" in url:
            url = ""  # a Jinja template only Ansible can expand
        if not out.get(str(cluster)):
            out[str(cluster)] = url
    return dict(sorted(out.items()))


def _walk_group(
    name: str,
    group: Any,
    inherited: dict[str, Any],
    scopes: dict[str, list[dict[str, Any]]],
    own: dict[str, dict[str, Any]],
) -> None:
    """Record, for every host under ``group``, the group variables it sees."""
    if not isinstance(group, dict):
        return
    scope = {**inherited, **(group.get("vars") or {})}
    for host, hvars in (group.get("hosts") or {}).items():
        scopes.setdefault(str(host), []).append(scope)
        own.setdefault(str(host), {}).update(hvars or {})
    for child, sub in (group.get("children") or {}).items():
        _walk_group(str(child), sub, scope, scopes, own)
