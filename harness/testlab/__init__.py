"""Throwaway labs shared by podlab's tests AND its benchmarks (``bench/``).

Each helper builds a small lab in named namespaces whose names carry a
``podlab-t-…`` marker and the calling process's id (so parallel runs never
collide), and removes everything it made in ``close()``: processes by pid,
mounts, namespaces, temp dirs. They need root and the kernel; they are not used
by ``podlab`` itself.

- ``wait``: ``wait_for`` (poll until true, fail naming what was awaited)
- ``etcd``: ``LocalEtcd``, a local etcd on free loopback ports (optionally TLS)
- ``agentlab``: node namespaces on a bridge, etcd, real node agents
- ``calnet``: a bare underlay of node namespaces (no etcd, no agent)
- ``svclab``: one node with routed or bridged pods, for proxy/policy tests
- ``failover``: three backends behind a VIP and a steady client stream
- ``deploylab``: a renamed copy of a shipped topology, up and always down
"""
