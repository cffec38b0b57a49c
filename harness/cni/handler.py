"""podlab-cni's commands: ADD, DEL, CHECK, STATUS, GC (VERSION needs none of this).

``handle(req)`` is the whole plugin behind the entry point: the agent's CNI
server calls it in a thread for each forwarded invocation, and ``plugin.py``
calls it in-process when no server answers. It runs in the node's network
namespace and reaches a pod's only through sockets made there (nsutil), so
many calls can run at once in one process.

Spec rules kept here (SPEC.md 1.1.0): ADD fails if ``CNI_IFNAME`` exists in the
pod already; a failed ADD leaves nothing (interfaces removed, address freed);
DEL succeeds when repeated, with no or a deleted netns, with an empty
prevResult; CHECK compares the kernel with prevResult; STATUS reports whether
the node can serve (lease, agent heartbeat, etcd); GC frees every reservation,
and node-side veth, of the network that no valid attachment holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.cni import bridged, ipam, links, nsutil, routed
from harness.cni.netconf import NetConf, NodeSubnet, parse, read_subnet_file
from harness.cni.spec import (
    INTERNAL,
    INVALID_CONFIG,
    INVALID_ENV,
    INVALID_NETNS,
    NOT_AVAILABLE,
    CniError,
    Request,
    cni_args,
    convert_result,
    parse_config,
    version_result,
)

log = logging.getLogger("podlab.cni")

#: How old the agent's heartbeat may be before STATUS says the node cannot serve.
HEALTH_MAX_AGE_S = 45.0
_local = threading.local()


@contextlib.contextmanager
def host_iproute() -> Iterator[IPRoute]:
    """The calling thread's netlink socket in the node's namespace, kept between calls.

    The CNI server's worker threads each keep one (an IPRoute is an event loop
    and a socket: worth not rebuilding per pod); it is dropped after any error
    other than a plain CNI error, so a confused socket is never reused.
    """
    ipr = getattr(_local, "ipr", None)
    if ipr is None:
        ipr = _local.ipr = nsutil.iproute()
    try:
        yield ipr
    except CniError:
        raise
    except BaseException:
        _local.ipr = None
        with contextlib.suppress(Exception):
            ipr.close()
        raise


def handle(req: Request) -> dict[str, Any] | None:
    """Run one command; returns the JSON to print (None: print nothing) or raises CniError."""
    if req.command == "VERSION":
        return version_result(req.stdin)
    conf = parse(parse_config(req))
    if req.command == "ADD":
        return cmd_add(req, conf)
    if req.command == "DEL":
        cmd_del(req, conf)
        return None
    if req.command == "CHECK":
        cmd_check(req, conf)
        return None
    if req.command == "STATUS":
        cmd_status(conf)
        return None
    cmd_gc(conf)
    return None


def _seed(req: Request) -> str:
    """What names the node-side veth: the pod (as the agent names it) or the container."""
    args = cni_args(req.args)
    ns, name = args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")
    if ns and name:
        return f"{ns}/{name}" if req.ifname == "eth0" else f"{ns}/{name}/{req.ifname}"
    return f"{req.container_id}/{req.ifname}"


def _host_if(conf: NetConf, req: Request) -> str:
    seed = _seed(req)
    return bridged.host_if_name(seed) if conf.mode == "bridge" else routed.host_if_name(seed)


def _check_netns(req: Request) -> None:
    if not nsutil.is_netns(req.netns):
        raise CniError(
            INVALID_ENV,
            f"CNI_NETNS {req.netns} is not a network namespace",
            "it does not exist or is not a namespace handle (e.g. /run/netns/NAME)",
        )
    if not req.netns_override and nsutil.same_as_current(req.netns):
        raise CniError(
            INVALID_NETNS, "plugin's netns and netns from CNI_NETNS should not be the same"
        )


def cmd_add(req: Request, conf: NetConf) -> dict[str, Any]:
    _check_netns(req)
    node = read_subnet_file(conf.subnet_file)
    mtu = conf.mtu or node.mtu
    pool = ipam.Pool(Path(conf.data_dir), node.subnet, str(node.gateway.ip))
    host_if = _host_if(conf, req)
    tag = links.alias(conf.name, req.container_id, req.ifname)
    with host_iproute() as host, nsutil.iproute(req.netns) as pod:
        if pod.link_lookup(ifname=req.ifname):  # before reserving anything
            raise CniError(
                INTERNAL,
                f"interface {req.ifname} already exists in {req.netns}",
                "ADD twice without DEL? the runtime must DEL first",
            )
        res = pool.reserve(conf.name, req.container_id, req.ifname, host_if, conf.wanted_ip(req))
        try:
            result = _plumb(host, pod, req, conf, node, host_if, tag, res.address, mtu)
        except BaseException as exc:
            _undo(host, pod, req, host_if, tag)
            pool.release(conf.name, req.container_id, req.ifname)
            if isinstance(exc, CniError):
                raise
            if isinstance(exc, (NetlinkError, OSError, RuntimeError)):
                raise CniError(INTERNAL, f"ADD failed, nothing left behind: {exc}") from exc
            raise
    return convert_result(result, conf.version)


def _plumb(
    host: Any,
    pod: Any,
    req: Request,
    conf: NetConf,
    node: NodeSubnet,
    host_if: str,
    tag: str,
    address: str,
    mtu: int,
) -> dict[str, Any]:
    seed = _seed(req)
    if conf.mode == "bridge":
        return bridged.add(
            host, pod, req.netns, req.ifname, host_if, tag, seed, address, node, conf, mtu
        )
    return routed.add(host, pod, req.netns, req.ifname, host_if, tag, seed, address, mtu)


def _undo(host: Any, pod: Any, req: Request, host_if: str, tag: str) -> None:
    """Remove what a failed ADD made (best effort: the error to report is the ADD's)."""
    with contextlib.suppress(NetlinkError, OSError):
        links.delete_pod_if(pod, req.ifname)
    with contextlib.suppress(NetlinkError, OSError):
        links.delete_host_if(host, host_if, tag)


def cmd_del(req: Request, conf: NetConf) -> None:
    """Undo an ADD; everything already gone is success (DEL is idempotent)."""
    tag = links.alias(conf.name, req.container_id, req.ifname)
    held = [
        r
        for d in ipam.pools(Path(conf.data_dir))
        if (r := ipam.pool_from_dir(Path(conf.data_dir), d).find(*_owner(conf, req)))
    ]
    if req.netns and nsutil.is_netns(req.netns):
        with nsutil.iproute(req.netns) as pod:
            links.delete_pod_if(pod, req.ifname)
    # the node end outlives a pod namespace only while something pins it: check by alias
    names = {r.host_if for r in held if r.host_if} | {_host_if(conf, req)}
    with host_iproute() as host:
        for name in names:
            links.delete_host_if(host, name, tag)
    for d in ipam.pools(Path(conf.data_dir)):
        ipam.pool_from_dir(Path(conf.data_dir), d).release(*_owner(conf, req))


def _owner(conf: NetConf, req: Request) -> tuple[str, str, str]:
    return conf.name, req.container_id, req.ifname


def cmd_check(req: Request, conf: NetConf) -> None:
    """Compare the attachment with prevResult and a fresh ADD; any difference fails."""
    prev = conf.prev_result
    if prev is None:
        raise CniError(INVALID_CONFIG, "CHECK needs prevResult", "the runtime passes ADD's result")
    _check_netns(req)
    node = read_subnet_file(conf.subnet_file)
    mtu = conf.mtu or node.mtu
    ips = prev.get("ips") or []
    if not ips:
        raise CniError(INVALID_CONFIG, "prevResult has no ips", json.dumps(prev)[:200])
    address = str(ips[0]["address"])
    plain = address.split("/")[0]
    pool = ipam.Pool(Path(conf.data_dir), node.subnet, str(node.gateway.ip))
    mine = pool.find(*_owner(conf, req))
    problems = []
    if mine is None or mine.address != plain:
        problems.append(f"address {plain} is not reserved for this attachment")
    host_if = mine.host_if if mine and mine.host_if else _host_if(conf, req)
    with host_iproute() as host, nsutil.iproute(req.netns) as pod:
        if conf.mode == "bridge":
            problems += bridged.check(host, pod, req.ifname, host_if, address, conf, mtu)
        else:
            problems += routed.check(host, pod, req.ifname, host_if, plain, mtu)
        veth = links.link_state(host, host_if)
        tag = links.alias(conf.name, req.container_id, req.ifname)
        if veth is not None and veth["alias"] != tag:
            problems.append(f"{host_if} belongs to {veth['alias']!r}, not this attachment")
    if problems:
        raise CniError(INTERNAL, "CHECK failed: " + "; ".join(problems), req.container_id)


def cmd_status(conf: NetConf) -> None:
    """Can this node serve ADD? Its lease, and a fresh agent heartbeat with etcd reachable."""
    try:
        read_subnet_file(conf.subnet_file)
    except CniError as exc:
        raise CniError(NOT_AVAILABLE, f"no pod subnet: {exc.msg}", exc.details) from exc
    try:
        health = json.loads(Path(conf.health_file).read_text())
        beat = float(health["heartbeat"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CniError(
            NOT_AVAILABLE,
            "podlab-agent is not running on this node",
            f"no heartbeat in {conf.health_file}: {exc}",
        ) from exc
    age = time.time() - beat
    if age > HEALTH_MAX_AGE_S:
        raise CniError(
            NOT_AVAILABLE,
            f"podlab-agent is not running on this node (last heartbeat {age:.0f} s ago)",
            conf.health_file,
        )
    if not health.get("etcd", False):
        raise CniError(
            NOT_AVAILABLE,
            "podlab-agent cannot reach etcd",
            str(health.get("etcdError") or "no answer"),
        )


def cmd_gc(conf: NetConf) -> None:
    """Free reservations and node-side veths of this network no valid attachment holds."""
    valid_raw = conf.raw.get("cni.dev/valid-attachments", conf.raw.get("cni.dev/attachments"))
    if not isinstance(valid_raw, list):
        raise CniError(
            INVALID_CONFIG,
            "GC needs cni.dev/valid-attachments",
            "a list of {containerID, ifname}; an empty list frees everything",
        )
    try:
        valid = {(str(a["containerID"]), str(a["ifname"])) for a in valid_raw}
    except (KeyError, TypeError) as exc:
        raise CniError(INVALID_CONFIG, f"malformed cni.dev/valid-attachments: {exc}") from exc
    data = Path(conf.data_dir)
    freed = []
    for d in ipam.pools(data):
        freed += ipam.pool_from_dir(data, d).collect(conf.name, valid)
    with host_iproute() as host:
        for name, (index, cid, ifname) in links.owned_links(host, conf.name).items():
            if (cid, ifname) not in valid:  # "MAY assume" its namespace is gone: remove it
                with contextlib.suppress(NetlinkError):
                    host.link("del", index=index)
                log.info("GC removed node-side veth %s of %s/%s", name, cid, ifname)
    for r in freed:
        log.info("GC freed %s held by %s/%s", r.address, r.container_id, r.ifname)
