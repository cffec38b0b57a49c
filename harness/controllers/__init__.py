"""The controller manager (``podlab-controllers``): scheduler, Deployment, ReplicaSet,
HPA, ResourceQuota usage and garbage collection for one cluster (docs/workloads.md).

A node-side process like the agent and the mesh syncer: it imports
``harness.kube`` (the rules) and ``harness.store`` (etcd), never the agent and
nothing host-side but the pure models.
"""
