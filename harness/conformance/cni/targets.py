"""What the CNI spec suite runs plugins in, and the plugins it knows how to configure.

The suite is black-box: it only ever *executes* a plugin binary, with the
``CNI_*`` variables and a configuration on stdin, inside a throwaway "node"
network namespace (``Node``), against throwaway container namespaces, and looks
at what the kernel then holds. A ``Target`` says how to configure one plugin:

- ``podlab`` / ``podlab-routed``: podlab-cni (modes bridge and routed), with its
  node-side companions a real node has (the CNI server the agent runs, the lease
  file, the agent's heartbeat), all inside the throwaway node;
- ``reference``: Debian's ``bridge`` + ``host-local`` (containernetworking-plugins),
  the control: a suite that passes it where it keeps the spec tests the spec, not
  podlab.
- ``custom``: any plugin, from a configuration file and a plugin directory.

Which spec versions a target speaks comes from its own VERSION answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cni import install, nsutil

#: Spec versions the suite tests (0.3.0 and 0.3.1 share one result format).
SUITE_VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
#: Debian 12's reference plugins (containernetworking-plugins 1.1.1).
REFERENCE_DIR = Path("/usr/lib/cni")


@dataclass(frozen=True)
class Call:
    """One plugin execution: exit status and what it printed."""

    command: str
    exit: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.stdout) if self.stdout.strip() else None
        except ValueError:
            return None

    def __str__(self) -> str:
        out = self.stdout.strip()[:400] or "(nothing)"
        err = self.stderr.strip()[-300:]
        return f"{self.command} exit {self.exit}, stdout {out}" + (f", stderr {err}" if err else "")


class Node:
    """A throwaway node: its network namespace, a directory, container namespaces."""

    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"podlab-cnitest-{name}-", dir="/dev/shm"))
        self.netns_dir = self.dir / "netns"
        self.path = str(self.netns_dir / "node")
        self._procs: list[subprocess.Popen[bytes]] = []
        nsutil.create(self.path, lo_up=True)
        self._count = 0

    def container(self, name: str = "") -> str:
        """A new, empty container namespace (lo up, as runtimes leave it)."""
        self._count += 1
        path = str(self.netns_dir / f"c{self._count}-{name}"[:60])
        nsutil.create(path, lo_up=True)
        return path

    def exec(
        self,
        argv: list[str],
        stdin: bytes = b"",
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["nsenter", f"--net={self.path}", *argv],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=timeout,
        )

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["nsenter", f"--net={self.path}", *argv],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "spawn.log", "ab"),  # noqa: SIM115 (the child keeps it)
            env=env,
        )
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.netns_dir.is_dir():
            for f in self.netns_dir.iterdir():
                with contextlib.suppress(OSError):
                    nsutil.remove(str(f))
        subprocess.run(["umount", "-l", str(self.netns_dir)], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Target:
    """How to configure and drive one plugin under test (subclasses fill it in)."""

    name: str
    plugin: str = ""
    cni_path: list[Path] = field(default_factory=list)
    #: addresses the "tiny" pool configuration can hand out at once
    tiny_capacity: int = 5
    node: Node | None = None
    versions: tuple[str, ...] = ()

    def setup(self, node: Node) -> None:
        self.node = node
        self.versions = tuple(self.version_info().get("supportedVersions") or ())

    def teardown(self) -> None:
        return None

    def config(self, version: str, network: str, pool: str = "normal") -> dict[str, Any]:
        raise NotImplementedError

    @contextlib.contextmanager
    def unavailable(self) -> Iterator[bool]:
        """Make the plugin unable to serve ADD while inside; yields False if it cannot."""
        yield False

    # -- running the plugin ------------------------------------------------------
    def env(self, command: str, **cni: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_PATH": ":".join(str(p) for p in self.cni_path),
        }
        env.update({f"CNI_{k.upper()}": v for k, v in cni.items()})
        return env

    def binary(self, plugin: str | None = None) -> str:
        for d in self.cni_path:
            p = d / (plugin or self.plugin)
            if os.access(p, os.X_OK):
                return str(p)
        raise FileNotFoundError(f"{plugin or self.plugin} not found in {self.cni_path}")

    def call(
        self, command: str, conf: dict[str, Any] | str | None, env: dict[str, str] | None = None
    ) -> Call:
        """Execute the plugin once in the node namespace."""
        assert self.node is not None
        stdin = conf if isinstance(conf, str) else json.dumps(conf or {})
        res = self.node.exec([self.binary()], stdin.encode(), env or self.env(command))
        return Call(command, res.returncode, res.stdout.decode(errors="replace"),
                    res.stderr.decode(errors="replace"))  # fmt: skip

    def version_info(self) -> dict[str, Any]:
        call = self.call("VERSION", {"cniVersion": "1.0.0"})
        return call.json if isinstance(call.json, dict) else {}


class PodlabTarget(Target):
    """podlab-cni with what a node gives it: the agent's CNI server, lease, heartbeat."""

    def __init__(self, mode: str = "bridge") -> None:
        super().__init__(name="podlab" if mode == "bridge" else f"podlab-{mode}")
        self.mode, self.plugin = mode, "podlab-cni"
        self._beat = threading.Event()
        self._stop = threading.Event()

    def setup(self, node: Node) -> None:
        d = node.dir
        bin_dir = d / "bin"
        install.install(bin_dir)
        self.cni_path = [bin_dir, REFERENCE_DIR]
        (d / "subnet.env").write_text(
            "FLANNEL_NETWORK=10.250.0.0/16\nFLANNEL_SUBNET=10.250.1.1/24\nFLANNEL_MTU=1500\n"
        )
        (d / "subnet-tiny.env").write_text(
            "FLANNEL_NETWORK=10.250.0.0/16\nFLANNEL_SUBNET=10.250.2.1/29\nFLANNEL_MTU=1500\n"
        )
        self.tiny_capacity = 5  # a /29 less its gateway
        self._beat.set()
        threading.Thread(target=self._heartbeat, args=(d / "health.json",), daemon=True).start()
        # the agent's CNI server, run as the agent would: in the node's namespace
        sock = d / "cni.sock"
        root = str(Path(install.__file__).parents[2])  # where harness is
        node.spawn([sys.executable, "-m", "harness.cni.server", str(sock)],
                   env={**os.environ, "PYTHONPATH": root})  # fmt: skip
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        super().setup(node)

    def _heartbeat(self, path: Path) -> None:
        while not self._stop.is_set():
            if self._beat.is_set():
                path.write_text(json.dumps({"heartbeat": time.time(), "etcd": True}))
            self._stop.wait(2.0)

    def teardown(self) -> None:
        self._stop.set()

    def config(self, version: str, network: str, pool: str = "normal") -> dict[str, Any]:
        assert self.node is not None
        d = self.node.dir
        conf: dict[str, Any] = {
            "cniVersion": version,
            "name": network,
            "type": "podlab-cni",
            "mode": self.mode,
            "subnetFile": str(d / ("subnet-tiny.env" if pool == "tiny" else "subnet.env")),
            "dataDir": str(d / "data"),
            "agentSocket": str(d / "cni.sock"),
            "healthFile": str(d / "health.json"),
        }
        if self.mode == "bridge":
            conf["bridge"] = "cnitiny0" if pool == "tiny" else "cni0"
        return conf

    @contextlib.contextmanager
    def unavailable(self) -> Iterator[bool]:
        """The agent stops: no heartbeat for longer than STATUS tolerates."""
        assert self.node is not None
        health = self.node.dir / "health.json"
        self._beat.clear()
        health.write_text(json.dumps({"heartbeat": time.time() - 3600, "etcd": True}))
        try:
            yield True
        finally:
            health.write_text(json.dumps({"heartbeat": time.time(), "etcd": True}))
            self._beat.set()


class ReferenceTarget(Target):
    """Debian's bridge + host-local: the control column."""

    def __init__(self) -> None:
        super().__init__(name="reference", plugin="bridge", cni_path=[REFERENCE_DIR])

    def config(self, version: str, network: str, pool: str = "normal") -> dict[str, Any]:
        assert self.node is not None
        if pool == "tiny":
            ranges = [[{"subnet": "10.251.2.0/29", "rangeStart": "10.251.2.2",
                        "rangeEnd": "10.251.2.6"}]]  # fmt: skip
        else:
            ranges = [[{"subnet": "10.251.1.0/24"}]]
        return {
            "cniVersion": version,
            "name": network,
            "type": "bridge",
            "bridge": "cnitiny0" if pool == "tiny" else "cnitest0",
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "dataDir": str(self.node.dir / "host-local"),
                "ranges": ranges,
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }


class CustomTarget(Target):
    """Any plugin: a configuration file (one plugin's, ``cniVersion`` and ``name`` are
    replaced per test) and the directories to find plugins in."""

    def __init__(self, conf_file: Path, cni_path: list[Path], name: str = "custom") -> None:
        self.template = json.loads(conf_file.read_text())
        super().__init__(name=name, plugin=str(self.template["type"]), cni_path=cni_path)

    def config(self, version: str, network: str, pool: str = "normal") -> dict[str, Any]:
        return {**self.template, "cniVersion": version, "name": network}


def builtin(name: str) -> Target:
    """A target by name: ``podlab``, ``podlab-routed``, ``reference``."""
    if name == "podlab":
        return PodlabTarget("bridge")
    if name == "podlab-routed":
        return PodlabTarget("routed")
    if name == "reference":
        return ReferenceTarget()
    raise KeyError(name)


BUILTIN = ("podlab", "podlab-routed", "reference")
