"""The cluster mesh's control plane: one syncer per cluster (``podlab-mesh``).

Node side (runs on a cluster's control-plane node, like the agent): it imports
the agent's etcd client and nothing from the host side. ADR 0004 says why it is
shaped like Cilium's KVStoreMesh; docs/etcd-layout.md ("Cluster mesh") fixes the
keys it writes.
"""
