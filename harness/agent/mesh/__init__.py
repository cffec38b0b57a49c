"""The cluster mesh on a node: remote clusters' state, global services, MCS, reachability.

Remote clusters reach a node only through its own cluster's etcd: the mesh
syncer mirrors each remote cluster's keys under
``/podlab/v1/<local>/mesh/<remote>/<the remote's own key>`` (Cilium's
KVStoreMesh pattern), so agents never talk to a remote etcd. Pure modules (no
kernel, no I/O; the host side imports them too): ``views`` (the mirrored
objects as one view per cluster), ``globalsvc`` (Cilium's global-service
annotations → endpoints), ``mcs`` (ServiceExport → ServiceImport, KEP-1645).
Kernel: ``reach`` (ICMP probes of remote nodes over the data path).
"""
