"""The proxy modes, by name (``proxy_mode`` in agent.yaml; default ``nftables``).

How to add one: a module with a class satisfying ``base.ServiceProxy`` (name,
full_sync, update, close) whose docstring names the kernel objects it creates,
and one entry below taking the ``ProxyOptions``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.agent.proxy.base import ServiceProxy
from harness.agent.proxy.iptables import IptablesProxy
from harness.agent.proxy.ipvs import IpvsProxy
from harness.agent.proxy.nftables import NftablesProxy, NftConfig
from harness.agent.proxy.userspace import UserspaceProxy

DEFAULT_MODE = "nftables"


@dataclass(frozen=True)
class ProxyOptions:
    service_cidr: str
    cluster_cidr: str | None = None
    netns: str | None = None  # None: the namespace the agent runs in (its node)
    ipvs_scheduler: str = "rr"  # ipvs mode only: rr, wrr, lc, wlc, sh, mh …


PROXIES: dict[str, Callable[[ProxyOptions], ServiceProxy]] = {
    "nftables": lambda o: NftablesProxy(NftConfig(o.service_cidr, o.cluster_cidr), o.netns),
    "iptables": lambda o: IptablesProxy(o.service_cidr, o.cluster_cidr, o.netns),
    "userspace": lambda o: UserspaceProxy(o.service_cidr, o.netns),
    "ipvs": lambda o: IpvsProxy(o.service_cidr, o.cluster_cidr, o.netns, o.ipvs_scheduler),
}


def make_proxy(mode: str, options: ProxyOptions) -> ServiceProxy:
    """The proxy for ``mode``; ValueError naming the known modes otherwise."""
    try:
        factory = PROXIES[mode]
    except KeyError:
        raise ValueError(f"unknown proxy mode {mode!r} (known: {', '.join(PROXIES)})") from None
    return factory(options)
