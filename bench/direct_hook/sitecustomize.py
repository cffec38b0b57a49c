"""Benchmark-only: the agent calls podlab-cni's handler in-process instead of executing it.

``bench/bench_pod_burst.py --direct`` puts this directory on the agent's
PYTHONPATH, so Python imports it at start-up. It replaces ``Runtime.exec`` with
a call of the very handler the plugin runs (same checks, same code), without
the plugin process and the socket: the difference to a normal run is what
executing the plugin costs. Never used outside that benchmark.
"""

from __future__ import annotations

import json
import os

if os.environ.get("PODLAB_BENCH_DIRECT") == "1":
    from harness.cni import handler, runtime, spec

    def _direct_exec(self, plugin, command, conf, att=None):  # type: ignore[no-untyped-def]
        env = {"CNI_COMMAND": command, "CNI_PATH": self.path_env}
        if att is not None:
            env.update({"CNI_CONTAINERID": att.container_id, "CNI_NETNS": att.netns,
                        "CNI_IFNAME": att.ifname,
                        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in att.args)})  # fmt: skip
        try:
            return handler.handle(spec.request_from_env(env, json.dumps(conf)))
        except spec.CniError as exc:
            raise runtime.PluginError(plugin, command, exc.code, exc.msg, exc.details) from exc

    runtime.Runtime.exec = _direct_exec  # type: ignore[method-assign]
