"""The etcd key layout, in one place (docs/etcd-layout.md).

Everything a cluster keeps lives under ``/podlab/v1/<cluster>/``, one folder per
kind of record, namespaced objects one level deeper (``pods/<ns>/<name>``). The
API, the agent, the services controller and (later) the mesh and controllers
build keys only through these helpers, so a layout change is one edit here and
one in the doc.
"""

from __future__ import annotations

ROOT = "/podlab/v1"


def cluster_prefix(cluster: str) -> str:
    """``/podlab/v1/<cluster>/``: everything one cluster keeps in its etcd."""
    return f"{ROOT}/{cluster}/"


def kind_prefix(cluster: str, plural: str, namespace: str | None = None) -> str:
    """The prefix of every record of one kind (``pods``), in one namespace or all."""
    base = f"{ROOT}/{cluster}/{plural}/"
    return f"{base}{namespace}/" if namespace else base


def object_key(cluster: str, plural: str, namespace: str | None, name: str) -> str:
    """``/podlab/v1/<cluster>/<plural>/<ns>/<name>``; no ``<ns>/`` for cluster-scoped kinds."""
    return f"{kind_prefix(cluster, plural, namespace)}{name}"


def nodes_prefix(cluster: str) -> str:
    """Where agents register their nodes."""
    return kind_prefix(cluster, "nodes")


def node_key(cluster: str, node: str) -> str:
    """A node's record, bound to its agent's lease."""
    return f"{nodes_prefix(cluster)}{node}"


def subnets_prefix(cluster: str) -> str:
    return kind_prefix(cluster, "subnets")


def subnet_key(cluster: str, subnet: str) -> str:
    """Subnet leases are keyed ``a.b.c.d-len`` (a ``/`` would split the key path)."""
    return f"{subnets_prefix(cluster)}{subnet.replace('/', '-')}"


def pod_key(cluster: str, namespace: str, name: str) -> str:
    """A Pod as applied (written by the API only)."""
    return object_key(cluster, "pods", namespace, name)


def podstatus_prefix(cluster: str, namespace: str | None = None) -> str:
    return kind_prefix(cluster, "podstatus", namespace)


def podstatus_key(cluster: str, namespace: str, name: str) -> str:
    """A pod's status (written by the agent on the pod's node)."""
    return object_key(cluster, "podstatus", namespace, name)


def service_key(cluster: str, namespace: str, name: str) -> str:
    return object_key(cluster, "services", namespace, name)


def serviceips_prefix(cluster: str) -> str:
    return kind_prefix(cluster, "serviceips")


def serviceip_key(cluster: str, ip: str) -> str:
    """The allocation index of one ClusterIP: its value names the owning Service."""
    return f"{serviceips_prefix(cluster)}{ip}"


def nodeports_prefix(cluster: str) -> str:
    return kind_prefix(cluster, "nodeports")


def nodeport_key(cluster: str, port: int, protocol: str) -> str:
    """The allocation index of one node port: ``nodeports/<port>-<tcp|udp|sctp>``."""
    return f"{nodeports_prefix(cluster)}{port}-{protocol.lower()}"


def mesh_prefix(cluster: str) -> str:
    """``/podlab/v1/<cluster>/mesh/``: the mesh syncer's mirror of the other clusters of
    the cluster's mesh (``mesh/<peer>/<peer's relative key>``, ``mesh/<peer>/status``;
    harness/mesh/keys.py has the rest of that layout)."""
    return f"{ROOT}/{cluster}/mesh/"


def kind_status_key(cluster: str, status_plural: str, namespace: str, name: str) -> str:
    """The status of a Deployment, ReplicaSet, HPA or ResourceQuota
    (``deploymentstatus/<ns>/<name>``…), written by the controller manager."""
    return object_key(cluster, status_plural, namespace, name)


def nodemetrics_prefix(cluster: str) -> str:
    return kind_prefix(cluster, "nodemetrics")


def nodemetrics_key(cluster: str, node: str) -> str:
    """A node's CPU and memory use and its pods' (metrics-server's data), by its agent."""
    return f"{nodemetrics_prefix(cluster)}{node}"


def controllers_prefix(cluster: str) -> str:
    """``/podlab/v1/<cluster>/controllers/``: the controller manager's own records
    (``leader``, ``hpa/<ns>/<name>`` for the autoscaler's remembered recommendations)."""
    return kind_prefix(cluster, "controllers")
