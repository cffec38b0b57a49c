"""podlab's CNI plugin (``podlab-cni``) and the runtime side the agent calls.

- ``spec.py``: the spec's rules shared by every part (versions, error codes,
  environment checks, result shapes); standard library only, so the plugin's
  entry point (``plugin.py``) starts in milliseconds.
- ``plugin.py``: the executable a runtime runs; forwards to the node agent's
  CNI server when it is up, else does the work in-process (``handler.py``).
- ``handler.py``, ``ipam.py``, ``bridged.py``, ``routed.py``, ``nsutil.py``:
  ADD/DEL/CHECK/STATUS/GC, crash-safe node-local IPAM, the two pod interface
  styles, namespaces without forking.
- ``server.py``: the CNI server inside the agent (a pre-warmed plugin).
- ``runtime.py``: a libcni-like runtime (exec, chaining, result cache, GC).
- ``netconf.py``: the network configuration lists podlab writes.

See docs/cni.md and docs/adr/0012-cni-plugin-served-by-the-agent.md.
"""
