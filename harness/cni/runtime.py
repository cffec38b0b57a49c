"""A CNI runtime, as libcni is one: run a network list's plugins, chain results, cache them.

The agent plumbs its pods only through this (``harness/agent/pods.py``), exactly
as podman or containerd call plugins: the plugin binary found on ``CNI_PATH``,
the ``CNI_*`` variables plus the runtime's own environment, the per-plugin
configuration on stdin (``name`` and the selected ``cniVersion`` inserted,
``capabilities`` turned into ``runtimeConfig``, ``prevResult`` from the plugin
before), the result or error read from stdout.

Like libcni (``libcni/api.go``): ADD runs the plugins in order and, once all
succeeded, stores a ``cniCacheV1`` file in ``<cacheDir>/results/
<network>-<containerID>-<ifname>``; DEL runs them in reverse with the cached
result as prevResult and removes the file; CHECK runs them in order against it;
GC first DELs every cached attachment of the network missing from the valid
list, then sends GC with ``cni.dev/valid-attachments``. One difference, chosen
for mode switches: DEL uses the configuration the attachment was made with (the
cached one, as ``GetNetworkListCachedConfig`` offers), not today's.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cni import spec


class ConfigListError(Exception):
    """A network configuration list that cannot be used; the message names file and key."""


class PluginError(Exception):
    """A plugin failed: its error code, message and details, and which call it was."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        text = f"{plugin} {command} failed (CNI error {code}): {msg}"
        super().__init__(text + (f" ({details})" if details else ""))
        self.plugin, self.command, self.code, self.msg, self.details = (
            plugin, command, code, msg, details,
        )  # fmt: skip


def select_version(conf: dict[str, Any], supported: tuple[str, ...] = spec.VERSIONS) -> str:
    """The highest of ``cniVersion`` and ``cniVersions`` this runtime supports (SPEC §1)."""
    offered = [conf.get("cniVersion"), *(conf.get("cniVersions") or [])]
    usable = [v for v in offered if isinstance(v, str) and v in supported]
    if not usable:
        raise ConfigListError(f"no supported cniVersion in {offered} (runtime: {list(supported)})")
    return max(usable, key=spec.version_key)


@dataclass(frozen=True)
class NetworkList:
    """A parsed ``.conflist``: its name, the version chosen, and the plugins in order."""

    name: str
    version: str
    plugins: tuple[dict[str, Any], ...]
    raw: bytes
    disable_check: bool = False
    disable_gc: bool = False

    @staticmethod
    def from_bytes(data: bytes, source: str = "<conflist>") -> NetworkList:
        try:
            conf = json.loads(data)
        except ValueError as exc:
            raise ConfigListError(f"{source}: not valid JSON: {exc}") from exc
        if not isinstance(conf, dict):
            raise ConfigListError(f"{source}: expected a JSON object")
        name = conf.get("name")
        if not isinstance(name, str) or not spec.valid_name(name):
            raise ConfigListError(f"{source}: name: {name!r} is not a valid network name")
        plugins = conf.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise ConfigListError(f"{source}: plugins: a non-empty list is required")
        for i, p in enumerate(plugins):
            if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
                raise ConfigListError(f"{source}: plugins[{i}].type: a plugin name is required")
        try:
            version = select_version(conf)
        except ConfigListError as exc:
            raise ConfigListError(f"{source}: {exc}") from exc
        return NetworkList(
            name,
            version,
            tuple(plugins),
            bytes(data),
            bool(conf.get("disableCheck", False)),
            bool(conf.get("disableGC", False)),
        )

    @staticmethod
    def from_file(path: Path) -> NetworkList:
        try:
            return NetworkList.from_bytes(path.read_bytes(), str(path))
        except OSError as exc:
            raise ConfigListError(f"{path}: cannot read: {exc.strerror}") from exc


@dataclass(frozen=True)
class Attachment:
    """One (container, interface) of a network: the runtime's side of ADD/DEL."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    capability_args: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class CacheEntry:
    """A ``cniCacheV1`` file: the attachment, the list it was made with, its result."""

    network: str
    attachment: Attachment
    config: bytes
    result: dict[str, Any]


class Runtime:
    """Runs plugins from ``bin_dirs`` and keeps results under ``cache_dir``/results."""

    def __init__(self, bin_dirs: list[Path], cache_dir: Path, timeout_s: float = 120.0) -> None:
        self.bin_dirs = bin_dirs
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.path_env = ":".join(str(d) for d in bin_dirs)

    # -- plugins -------------------------------------------------------------------
    def find(self, plugin: str) -> Path:
        for d in self.bin_dirs:
            p = d / plugin
            if os.access(p, os.X_OK):
                return p
        raise PluginError(
            plugin, "find", spec.INVALID_CONFIG, f"plugin not found in {self.path_env}"
        )

    def exec(
        self, plugin: str, command: str, conf: dict[str, Any], att: Attachment | None = None
    ) -> dict[str, Any] | None:
        """One plugin call; its parsed stdout (None if empty), or PluginError."""
        env = dict(os.environ)
        env.update({"CNI_COMMAND": command, "CNI_PATH": self.path_env})
        if att is not None:
            env.update(
                {
                    "CNI_CONTAINERID": att.container_id,
                    "CNI_NETNS": att.netns,
                    "CNI_IFNAME": att.ifname,
                    "CNI_ARGS": ";".join(f"{k}={v}" for k, v in att.args),
                }
            )
        try:
            proc = subprocess.run(
                [str(self.find(plugin))],
                input=json.dumps(conf).encode(),
                capture_output=True,
                timeout=self.timeout_s,
                env=env,
                cwd="/",
            )
        except subprocess.TimeoutExpired as exc:
            raise PluginError(
                plugin, command, spec.INTERNAL, f"no answer in {exc.timeout} s"
            ) from exc
        out = proc.stdout.decode(errors="replace").strip()
        if proc.returncode != 0:
            raise _plugin_error(plugin, command, out, proc.stderr.decode(errors="replace"))
        if not out:
            return None
        try:
            value = json.loads(out)
        except ValueError as exc:
            raise PluginError(
                plugin, command, spec.DECODE_FAILURE, f"bad output: {out[:200]}"
            ) from exc
        return value if isinstance(value, dict) else None

    @staticmethod
    def plugin_conf(
        net: NetworkList,
        plugin: dict[str, Any],
        att: Attachment | None,
        prev: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The per-plugin stdin: name/version inserted, capabilities → runtimeConfig."""
        conf = {k: v for k, v in plugin.items() if k != "capabilities"}
        conf["cniVersion"], conf["name"] = net.version, net.name
        caps = plugin.get("capabilities") or {}
        if att is not None:
            rc = {k: v for k, v in att.capability_args.items() if caps.get(k)}
            if rc:
                conf["runtimeConfig"] = rc
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    # -- the list operations ---------------------------------------------------------
    def add(self, net: NetworkList, att: Attachment) -> dict[str, Any]:
        """ADD every plugin in order; cache and return the final result."""
        prev: dict[str, Any] | None = None
        for plugin in net.plugins:
            conf = self.plugin_conf(net, plugin, att, prev)
            result = self.exec(plugin["type"], "ADD", conf, att)
            if result is None:
                raise PluginError(plugin["type"], "ADD", spec.DECODE_FAILURE, "printed no result")
            prev = result
        assert prev is not None
        self._write_cache(net, att, prev)
        return prev

    def delete(self, net: NetworkList, att: Attachment) -> None:
        """DEL in reverse order with the cached result; idempotent, like the plugins."""
        cached = self.cached(net.name, att.container_id, att.ifname)
        used, prev = net, None
        if cached is not None:
            used = NetworkList.from_bytes(cached.config, "cached config")
            if spec.at_least(used.version, "0.4.0"):
                prev = cached.result
            if not att.netns:
                att = Attachment(att.container_id, cached.attachment.netns, att.ifname, att.args)
        for plugin in reversed(used.plugins):
            conf = self.plugin_conf(used, plugin, att, prev)
            self.exec(plugin["type"], "DEL", conf, att)
        self.cache_path(net.name, att.container_id, att.ifname).unlink(missing_ok=True)

    def check(self, net: NetworkList, att: Attachment) -> None:
        """CHECK every plugin against the cached result (PluginError on drift)."""
        if net.disable_check or not spec.at_least(net.version, "0.4.0"):
            return
        cached = self.cached(net.name, att.container_id, att.ifname)
        if cached is None:
            raise PluginError(net.name, "CHECK", spec.UNKNOWN_CONTAINER, "no cached ADD result")
        for plugin in net.plugins:
            conf = self.plugin_conf(net, plugin, att, cached.result)
            self.exec(plugin["type"], "CHECK", conf, att)

    def status(self, net: NetworkList) -> None:
        """STATUS every plugin (spec 1.1.0+); PluginError with code 50/51 when not ready."""
        if not spec.at_least(net.version, "1.1.0"):
            return
        for plugin in net.plugins:
            self.exec(plugin["type"], "STATUS", self.plugin_conf(net, plugin, None, None))

    def gc(self, net: NetworkList, valid: list[Attachment]) -> list[str]:
        """DEL stale cached attachments, then GC every plugin; returns the problems met."""
        if net.disable_gc:
            return []
        keep = {(a.container_id, a.ifname) for a in valid}
        problems = []
        for entry in self.cached_entries(net.name):
            att = entry.attachment
            if (att.container_id, att.ifname) not in keep:
                try:
                    self.delete(net, att)
                except PluginError as exc:
                    problems.append(str(exc))
        if spec.at_least(net.version, "1.1.0"):
            listed = [{"containerID": c, "ifname": i} for c, i in sorted(keep)]
            for plugin in net.plugins:
                conf = self.plugin_conf(net, plugin, None, None)
                conf["cni.dev/valid-attachments"] = listed
                conf["cni.dev/attachments"] = listed  # the key before cni v1.2.3
                try:
                    self.exec(plugin["type"], "GC", conf)
                except PluginError as exc:  # GC goes on past errors (SPEC §2)
                    problems.append(str(exc))
        return problems

    # -- the cache -------------------------------------------------------------------
    def cache_path(self, network: str, container_id: str, ifname: str) -> Path:
        return self.cache_dir / "results" / f"{network}-{container_id}-{ifname}"

    def _write_cache(self, net: NetworkList, att: Attachment, result: dict[str, Any]) -> None:
        path = self.cache_path(net.name, att.container_id, att.ifname)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "kind": "cniCacheV1",
            "containerId": att.container_id,
            "config": base64.b64encode(net.raw).decode(),
            "ifName": att.ifname,
            "networkName": net.name,
            "netns": att.netns,
            "cniArgs": [list(kv) for kv in att.args],
            "capabilityArgs": att.capability_args,
            "result": result,
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data)}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    @staticmethod
    def _read_cache(path: Path) -> CacheEntry | None:
        try:
            data = json.loads(path.read_text())
            att = Attachment(
                str(data["containerId"]),
                str(data.get("netns", "")),
                str(data["ifName"]),
                tuple((str(k), str(v)) for k, v in data.get("cniArgs") or []),
                dict(data.get("capabilityArgs") or {}),
            )
            config = base64.b64decode(data["config"])
            return CacheEntry(str(data["networkName"]), att, config, dict(data.get("result") or {}))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def cached(self, network: str, container_id: str, ifname: str) -> CacheEntry | None:
        return self._read_cache(self.cache_path(network, container_id, ifname))

    def cached_entries(self, network: str) -> list[CacheEntry]:
        """Every readable cache file of ``network``."""
        d = self.cache_dir / "results"
        if not d.is_dir():
            return []
        out = []
        for p in sorted(d.glob(f"{network}-*")):
            entry = self._read_cache(p)
            if entry is not None and entry.network == network:
                out.append(entry)
        return out


def _plugin_error(plugin: str, command: str, stdout: str, stderr: str) -> PluginError:
    """The plugin's error JSON (stdout, as libcni reads it; stderr if stdout is empty)."""
    for text in (stdout, stderr.strip()):
        if not text:
            continue
        try:
            e = json.loads(text)
            return PluginError(
                plugin,
                command,
                int(e.get("code", 0)),
                str(e.get("msg", "")),
                str(e.get("details", "")),
            )
        except (ValueError, AttributeError, TypeError):
            return PluginError(plugin, command, spec.INTERNAL, text[-500:])
    return PluginError(plugin, command, spec.INTERNAL, "failed without a message")
