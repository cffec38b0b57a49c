"""The syncer's configuration: ``/etc/podlab/mesh.yaml`` (rendered by the deploy's
``mesh`` role) and the remotes directory (one ``<cluster>.yaml`` per peer).

Parsed strictly, like agent.yaml: a typo is an error at start-up.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PATH = "/etc/podlab/mesh.yaml"
log = logging.getLogger("podlab.mesh")


class ConfigError(Exception):
    """mesh.yaml (or a remote's file) is missing or invalid."""


class Tls(BaseModel):
    """Certificate files: the mesh CA, and this cluster's certificate and key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ca: Path
    cert: Path
    key: Path


class MeshConfig(BaseModel):
    """One cluster's syncer. ``cluster``…``encryption`` become its ``clusterinfo``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str
    cluster_id: int = Field(ge=1, le=255)
    mesh: str
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    mode: str
    encryption: Literal["none", "wireguard"] = "none"
    etcd_endpoints: list[str] = Field(min_length=1)  # the cluster's own etcd
    export_endpoint: str  # https://<control-plane underlay>:32379 (this cluster's export etcd)
    export_tls: Tls  # to our export etcd (TLS layer; the user is root by password)
    password_file: Path  # the export etcd's root password (0600)
    peer_tls: Tls  # our identity at every peer's export etcd (CN remote-<cluster>)
    remotes_dir: Path = Path("/etc/podlab/mesh/remotes")
    heartbeat_s: float = Field(1.0, gt=0)
    dead_after_s: float = Field(3.0, gt=0)  # no remote heartbeat this long = disconnected
    resync_s: float = Field(30.0, gt=0)  # full export reconcile period
    etcdctl: str = "/usr/bin/etcdctl"
    # log each batch of changes the exporter and every link copied (when it arrived, when
    # it was written, how many keys): bench/bench_mesh.py's per-hop figures (--mirror syncer)
    trace: bool = False

    @property
    def routing(self) -> str:
        """``native`` for bgp clusters (pod routes through the routers), else ``tunnel``."""
        return "native" if self.mode == "bgp" else "tunnel"


class Remote(BaseModel):
    """A peer cluster: its name (the file's stem) and its export etcd endpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    endpoints: list[str] = Field(min_length=1)


def load(path: str | Path = DEFAULT_PATH) -> MeshConfig:
    """Read and validate mesh.yaml, naming every bad field."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    try:
        return MeshConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_errors(p, exc)) from exc


def _errors(p: Path, exc: ValidationError) -> str:
    return "\n".join(
        f"{p}: {'.'.join(str(x) for x in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
    )


def load_remotes(directory: Path, own: str) -> tuple[dict[str, Remote], list[str]]:
    """Every ``<cluster>.yaml`` in ``directory`` (``{endpoints: [...]}``), and the
    problems of the files that could not be used (logged by the caller)."""
    remotes: dict[str, Remote] = {}
    problems: list[str] = []
    if not directory.is_dir():
        return remotes, problems
    for f in sorted(directory.glob("*.yaml")):
        name = f.stem
        if name == own:
            problems.append(f"{f}: names this cluster itself; ignored")
            continue
        try:
            data = yaml.safe_load(f.read_text()) or {}
            remotes[name] = Remote.model_validate({"name": name, **data})
        except (OSError, yaml.YAMLError, TypeError) as exc:
            problems.append(f"{f}: unreadable: {exc}")
        except ValidationError as exc:
            problems.append(_errors(f, exc))
    return remotes, problems
