"""Mesh keys, in one place (docs/etcd-layout.md, "Cluster mesh").

In a cluster's own etcd the syncer owns ``/podlab/v1/<local>/mesh/<remote>/…``
(byte-identical copies of the remote's exported keys, plus ``status``) and
``/podlab/v1/<local>/clusterinfo``. The export etcd holds the exported keys under
their own names plus ``heartbeat``.
"""

from __future__ import annotations

from harness.store.keys import cluster_prefix, mesh_prefix

__all__ = ["cluster_prefix", "mesh_prefix"]  # re-exported: one import for mesh code

#: Relative keys (or folders, ending in ``/``) a cluster exports to its peers.
EXPORTED: tuple[str, ...] = (
    "clusterinfo",
    "nodes/",
    "subnets/",
    "pods/",
    "podstatus/",
    "namespaces/",
    "services/",
    "endpoints/",
    "serviceexports/",
)
CLUSTERINFO = "clusterinfo"
HEARTBEAT = "heartbeat"
STATUS = "status"
MESH = "mesh/"


def is_exported(rel: str) -> bool:
    """Whether a relative key (``nodes/c1-w1``) is part of the cluster's export."""
    return any(rel == e if not e.endswith("/") else rel.startswith(e) for e in EXPORTED)


def clusterinfo_key(cluster: str) -> str:
    return cluster_prefix(cluster) + CLUSTERINFO


def heartbeat_key(cluster: str) -> str:
    """The export etcd's liveness key (never in the cluster's own etcd)."""
    return cluster_prefix(cluster) + HEARTBEAT


def remote_prefix(local: str, remote: str) -> str:
    """``/podlab/v1/<local>/mesh/<remote>/``."""
    return f"{mesh_prefix(local)}{remote}/"


def mirror_key(local: str, remote: str, rel: str) -> str:
    """Where ``local`` keeps its copy of ``remote``'s relative key ``rel``."""
    return remote_prefix(local, remote) + rel


def status_key(local: str, remote: str) -> str:
    return remote_prefix(local, remote) + STATUS


def split_mirror_key(local: str, key: str) -> tuple[str, str] | None:
    """``(remote, rel)`` for a mirrored key, None for anything else (status too)."""
    prefix = mesh_prefix(local)
    if not key.startswith(prefix):
        return None
    remote, _, rel = key[len(prefix) :].partition("/")
    if not remote or not rel or rel == STATUS:
        return None
    return remote, rel
