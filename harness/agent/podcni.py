"""The agent as a CNI runtime: its pods are attached by running ``podlab-cni``, nothing else.

At start the agent installs the plugin where runtimes look (a launcher in the
first ``cni_bin_dirs``, like Calico's and flannel's install-cni), writes two network
configuration lists and starts the CNI server the plugin forwards to:

- ``<run_dir>/cni/podlab-pods.conflist``, network ``podlab-pods``: the agent's own
  pods (podlab-cni alone; ``cniVersions`` up to 1.1.0, so GC and STATUS work);
- ``<cni_conf_dir>/10-podlab.conflist``, network ``podlab``: for other runtimes
  on the node (podman), podlab-cni then ``portmap``, cniVersion 1.0.0 (Debian
  12's portmap stops there, and a runtime picks one version for a whole list).

Two networks, one address pool (the node's subnet): the agent's GC frees only
``podlab-pods`` attachments it does not know, never a podman container's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from typing import Any

from harness.agent.config import AgentConfig
from harness.agent.datapath.base import PodInterface
from harness.agent.leases import atomic_write
from harness.cni import install, netconf, spec
from harness.cni.runtime import Attachment, CacheEntry, NetworkList, Runtime
from harness.cni.server import CniServer

log = logging.getLogger("podlab.podcni")

POD_NETWORK = "podlab-pods"
RUNTIME_NETWORK = "podlab"
IFNAME = "eth0"
MODES = {PodInterface.BRIDGED: "bridge", PodInterface.ROUTED: "routed"}
#: The attachment settings that, when changed, re-attach a running pod (DEL + ADD,
#: same address): the interface style and the MTU.
ATTACH_KEYS = ("type", "mode", "mtu", "bridge")


def container_id(namespace: str, name: str, uid: str) -> str:
    """The CNI container ID of a pod: readable, unique per pod object (its uid)."""
    cid = f"{namespace}_{name}_{hashlib.sha256(uid.encode()).hexdigest()[:8]}"
    if not spec.valid_name(cid) or len(cid) > 200:
        cid = hashlib.sha256(f"{namespace}/{name}/{uid}".encode()).hexdigest()[:40]
    return cid


def attach_key(net: NetworkList) -> str:
    first = net.plugins[0]
    return json.dumps({k: first.get(k) for k in ATTACH_KEYS}, sort_keys=True)


class PodNetworking:
    """Conflists, the plugin link, the CNI server, and the runtime calls for pods."""

    def __init__(self, cfg: AgentConfig, style: PodInterface, mtu: int) -> None:
        self.cfg, self.mode, self.mtu = cfg, MODES[style], mtu
        self.runtime = Runtime(list(cfg.cni_bin_dirs), cfg.cni_cache_dir)
        self.socket = cfg.run_dir / "cni.sock"
        self.health = cfg.run_dir / "agent-health.json"
        self.server = CniServer(self.socket)
        self.conflist = cfg.run_dir / "cni" / f"{POD_NETWORK}.conflist"
        self.runtime_conflist = cfg.cni_conf_dir / "10-podlab.conflist"
        self.net: NetworkList | None = None

    def _plugin_conf(self, name: str, chain: list[dict[str, Any]], versions: list[str] | None):
        return netconf.conflist(
            name,
            self.mode,
            self.mtu,
            subnet_file=str(self.cfg.run_dir / "subnet.env"),
            data_dir=str(self.cfg.state_dir / "cni"),
            agent_socket=str(self.socket),
            health_file=str(self.health),
            chain=chain,
            versions=versions,
        )

    def install(self) -> None:
        """Link the plugin, write both conflists, start the server (idempotent)."""
        self._link_plugin()
        own = self._plugin_conf(POD_NETWORK, [], ["1.0.0", "1.1.0"])
        shared = self._plugin_conf(
            RUNTIME_NETWORK, [{"type": "portmap", "capabilities": {"portMappings": True}}], None
        )
        for path, conf in ((self.conflist, own), (self.runtime_conflist, shared)):
            text = json.dumps(conf, indent=2) + "\n"
            if not path.exists() or path.read_text() != text:
                atomic_write(path, text)
                log.info("wrote CNI network configuration %s", path)
        self.net = NetworkList.from_file(self.conflist)
        self.server.start()

    def _link_plugin(self) -> None:
        path, changed = install.install(self.cfg.cni_bin_dirs[0])
        if changed:
            log.info("installed the CNI plugin %s", path)

    def close(self) -> None:
        self.server.close()

    def write_health(self, etcd_ok: bool, error: str = "") -> None:
        """The heartbeat STATUS reads: this agent lives, and whether etcd answers."""
        data: dict[str, Any] = {"heartbeat": time.time(), "pid": os.getpid(), "etcd": etcd_ok}
        if error:
            data["etcdError"] = error
        atomic_write(self.health, json.dumps(data) + "\n")

    # -- per pod ---------------------------------------------------------------------
    def attachment(
        self, cid: str, netns: str, namespace: str, name: str, ip: str = ""
    ) -> Attachment:
        args = (
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", namespace),
            ("K8S_POD_NAME", name),
            ("K8S_POD_INFRA_CONTAINER_ID", cid),
        )
        caps = {"ips": [ip]} if ip else {}
        return Attachment(cid, netns, IFNAME, args, caps)

    def cached(self, cid: str) -> CacheEntry | None:
        return self.runtime.cached(POD_NETWORK, cid, IFNAME)

    def current(self, entry: CacheEntry) -> bool:
        """True if a cached attachment was made with today's style and MTU."""
        assert self.net is not None
        try:
            made = NetworkList.from_bytes(entry.config, "cached config")
        except ValueError:
            return False
        return attach_key(made) == attach_key(self.net)

    def add(self, att: Attachment) -> dict[str, Any]:
        """ADD; on failure DEL (the spec's rule) and re-raise."""
        assert self.net is not None
        try:
            return self.runtime.add(self.net, att)
        except Exception:
            with contextlib.suppress(Exception):
                self.runtime.delete(self.net, att)
            raise

    def delete(self, att: Attachment) -> None:
        assert self.net is not None
        self.runtime.delete(self.net, att)

    def gc(self, valid: list[Attachment]) -> list[str]:
        assert self.net is not None
        return self.runtime.gc(self.net, valid)


def result_address(result: dict[str, Any]) -> str:
    """The pod's IPv4 address (without prefix) from an ADD result."""
    for ip in result.get("ips") or []:
        address = str(ip.get("address", ""))
        if "." in address:
            return address.split("/")[0]
    raise ValueError(f"ADD result has no IPv4 address: {result}")


def result_host_if(result: dict[str, Any]) -> str:
    """The node-side veth: the host interface (no sandbox) other than a bridge."""
    host = [i for i in result.get("interfaces") or [] if not i.get("sandbox")]
    return str(host[-1]["name"]) if host else ""
