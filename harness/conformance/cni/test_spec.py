"""Scenario 35: a black-box CNI spec suite, for any plugin binary (SPEC.md 1.1.0).

Every test executes the plugin as a runtime would (``CNI_*`` variables, the
configuration on stdin, the answer on stdout) in a throwaway node namespace, and
judges by the plugin's output and what the kernel then holds. Each runs for
every target (``--cni-target``) and, where the rule is per version, for every
spec version the target claims; a version it does not claim is "not
applicable", except spec 1.1.0's GC and STATUS, which a plugin that stops at
1.0.0 does not have (Debian's reference plugins: "FIXME GC" in host-local).
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from harness.cni import nsutil
from harness.cni.spec import at_least, version_key
from harness.conformance.cni import schema
from harness.conformance.cni.plugin import Pods
from harness.conformance.cni.targets import REFERENCE_DIR, SUITE_VERSIONS, Call, Target


# -- helpers -----------------------------------------------------------------------------
def ok(call: Call, what: str) -> Any:
    assert call.exit == 0, f"{what}: {call}"
    return call.json


def refused(call: Call, what: str, codes: tuple[int, ...] = ()) -> dict[str, Any]:
    """The call failed the spec's way: non-zero exit, an error JSON on stdout, a code."""
    assert call.exit != 0, f"{what}: expected an error, got {call}"
    problems = schema.error_problems(call.json)
    assert not problems, f"{what}: the error is not a CNI error JSON on stdout ({problems}): {call}"
    err: dict[str, Any] = call.json
    if codes:
        assert err["code"] in codes, f"{what}: error code {err['code']}, expected {codes}: {call}"
    return err


def address(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"])


def addresses(netns: str, ifname: str = "eth0") -> set[str]:
    with nsutil.iproute(netns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return set()
        return {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=idx[0])}


def links(netns: str) -> set[str]:
    with nsutil.iproute(netns) as ipr:
        return {str(m.get_attr("IFLA_IFNAME")) for m in ipr.get_links()}


def highest(target: Target, at_most: str = "1.1.0") -> str:
    """The highest suite version the target claims, not above ``at_most``."""
    usable = [v for v in SUITE_VERSIONS if v in target.versions]
    usable = [v for v in usable if version_key(v) <= version_key(at_most)]
    if not usable:
        pytest.skip(f"not applicable: {target.name} speaks {target.versions}")
    return usable[-1]


def need_1_1(target: Target, what: str) -> None:
    if "1.1.0" not in target.versions:
        pytest.fail(
            f"{what} is spec 1.1.0 (2024); {target.name} speaks only "
            f"{', '.join(target.versions)}, so it has no {what}"
        )


def fill(pods: Pods, version: str, count: int) -> list[tuple[str, str, dict[str, Any]]]:
    """``count`` ADDs in the tiny pool, each must succeed: (cid, netns, result)."""
    out = []
    for i in range(count):
        call, cid, netns = pods.add(version, pool="tiny")
        out.append((cid, netns, ok(call, f"ADD {i + 1} of {count} in a pool of {count}")))
    return out


# -- VERSION -----------------------------------------------------------------------------
def test_version_lists_supported_versions(cni_target: Target) -> None:
    answer = ok(cni_target.call("VERSION", {"cniVersion": "0.4.0"}), "VERSION")
    assert isinstance(answer, dict), f"VERSION printed no JSON object: {answer!r}"
    versions = answer.get("supportedVersions")
    assert isinstance(versions, list) and versions, f"no supportedVersions: {answer}"
    assert "0.4.0" in versions or "1.0.0" in versions, f"neither 0.4.0 nor 1.0.0: {versions}"


def test_version_echoes_the_requested_cniversion(cni_target: Target) -> None:
    """SPEC §Version: ``cniVersion`` is "the value of cniVersion specified on input"."""
    answer = ok(cni_target.call("VERSION", {"cniVersion": "0.4.0"}), "VERSION")
    assert answer.get("cniVersion") == "0.4.0", (
        f'asked with cniVersion "0.4.0", answered {answer.get("cniVersion")!r}'
    )


# -- ADD ---------------------------------------------------------------------------------
def test_add_result_matches_the_schema(cni_version: str, pods: Pods) -> None:
    call, _cid, netns = pods.add(cni_version)
    result = ok(call, "ADD")
    problems = schema.result_problems(result, cni_version, "eth0", netns)
    assert not problems, f"ADD result at {cni_version}: {'; '.join(problems)}: {call.stdout}"
    assert address(result) in addresses(netns), (
        f"eth0 in the pod lacks {address(result)}: {addresses(netns)}"
    )


def test_second_add_of_one_attachment_fails(cni_version: str, pods: Pods) -> None:
    call, cid, netns = pods.add(cni_version)
    first = ok(call, "first ADD")
    again = pods.call("ADD", cid, netns, pods.conf_of(cid))
    refused(again, "second ADD of the same container and interface")
    assert address(first) in addresses(netns), "the second ADD broke the first attachment"


# -- DEL ---------------------------------------------------------------------------------
def test_del_twice_succeeds(cni_version: str, pods: Pods) -> None:
    call, cid, netns = pods.add(cni_version)
    result = ok(call, "ADD")
    conf = pods.conf_of(cid)
    with_prev = {**conf, "prevResult": result} if at_least(cni_version, "0.4.0") else conf
    ok(pods.call("DEL", cid, netns, with_prev), "DEL")
    assert "eth0" not in links(netns), "eth0 still in the pod after DEL"
    ok(pods.call("DEL", cid, netns, conf), "second DEL (nothing left to delete)")


def test_del_with_the_netns_gone_or_not_given_frees_the_address(
    cni_target: Target, pods: Pods
) -> None:
    version = highest(cni_target, "1.0.0")
    made = fill(pods, version, cni_target.tiny_capacity)
    refused(pods.add(version, pool="tiny")[0], "ADD with the pool full")
    (c1, n1, _r1), (c2, _n2, _r2) = made[0], made[1]
    nsutil.remove(n1)  # the runtime lost the namespace (e.g. a reboot)
    ok(pods.call("DEL", c1, n1, pods.conf_of(c1)), "DEL with CNI_NETNS deleted")
    ok(pods.call("DEL", c2, "", pods.conf_of(c2)), "DEL with CNI_NETNS empty")
    for i in range(2):
        ok(pods.add(version, pool="tiny")[0], f"ADD {i + 1} of 2 into the freed addresses")


# -- CHECK -------------------------------------------------------------------------------
@pytest.mark.cni_since("0.4.0")
@pytest.mark.parametrize("drift", ["route", "address"])
def test_check_detects_drift(cni_version: str, pods: Pods, drift: str) -> None:
    call, cid, netns = pods.add(cni_version)
    result = ok(call, "ADD")
    conf = {**pods.conf_of(cid), "prevResult": result}
    ok(pods.call("CHECK", cid, netns, conf), "CHECK right after ADD (the control)")
    with nsutil.iproute(netns) as ipr:
        if drift == "route":
            ipr.route("del", dst="0.0.0.0", dst_len=0)
        else:
            plain, plen = address(result).split("/")
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("del", index=idx, address=plain, prefixlen=int(plen))
    refused(pods.call("CHECK", cid, netns, conf), f"CHECK after the pod's {drift} was removed")


# -- GC and STATUS (spec 1.1.0) ------------------------------------------------------------
def test_gc_frees_only_stale_attachments(cni_target: Target, pods: Pods) -> None:
    need_1_1(cni_target, "GC")
    made = fill(pods, "1.1.0", 3)
    other = Pods(cni_target, f"{pods.network}-x")  # another network: GC must leave it alone
    try:
        call, ocid, onetns = other.add("1.1.0")
        oresult = ok(call, "ADD in another network")
        keep = [made[0], made[2]]
        valid = [{"containerID": cid, "ifname": "eth0"} for cid, _n, _r in keep]
        conf = {**cni_target.config("1.1.0", pods.network, "tiny"),
                "cni.dev/valid-attachments": valid}  # fmt: skip
        ok(cni_target.call("GC", conf, cni_target.env("GC")), "GC")
        for cid, netns, result in keep:
            check = {**pods.conf_of(cid), "prevResult": result}
            ok(pods.call("CHECK", cid, netns, check), f"CHECK of {cid}, valid during GC")
        check = {**other.conf_of(ocid), "prevResult": oresult}
        ok(other.call("CHECK", ocid, onetns, check), "CHECK of another network's attachment")
        free = cni_target.tiny_capacity - len(keep)
        for i in range(free):  # the stale one's address is free again
            ok(pods.add("1.1.0", pool="tiny")[0], f"ADD {i + 1} of {free} after GC")
    finally:
        other.cleanup()


def test_status_is_ok_when_the_plugin_can_serve(cni_target: Target) -> None:
    need_1_1(cni_target, "STATUS")
    conf = cni_target.config("1.1.0", "t-status")
    ok(cni_target.call("STATUS", conf, cni_target.env("STATUS")), "STATUS")


def test_status_says_when_the_plugin_cannot_serve(cni_target: Target) -> None:
    need_1_1(cni_target, "STATUS")
    conf = cni_target.config("1.1.0", "t-status")
    with cni_target.unavailable() as possible:
        if not possible:
            pytest.skip(f"not applicable: no way to make {cni_target.name} unavailable")
        call = cni_target.call("STATUS", conf, cni_target.env("STATUS"))
    refused(call, "STATUS while the plugin cannot serve", codes=(50, 51))
    ok(cni_target.call("STATUS", conf, cni_target.env("STATUS")), "STATUS once it can again")


# -- errors ------------------------------------------------------------------------------
def test_unknown_command_is_refused(cni_target: Target) -> None:
    conf = cni_target.config(highest(cni_target), "t-err")
    env = cni_target.env("FROB", containerid="cnitest-frob", netns="/run/netns/none",
                         ifname="eth0")  # fmt: skip
    err = refused(cni_target.call("FROB", conf, env), "CNI_COMMAND=FROB", (4,))
    assert "FROB" in err["msg"] + err.get("details", ""), f"message does not name it: {err}"


def test_missing_variable_is_refused_by_name(cni_target: Target) -> None:
    conf = cni_target.config(highest(cni_target), "t-err")
    env = cni_target.env("ADD", netns="/run/netns/none", ifname="eth0")  # no CNI_CONTAINERID
    err = refused(cni_target.call("ADD", conf, env), "ADD without CNI_CONTAINERID", (4,))
    assert "CNI_CONTAINERID" in err["msg"] + err.get("details", ""), f"not named: {err}"


def test_malformed_config_is_a_decode_error(cni_target: Target) -> None:
    env = cni_target.env("ADD", containerid="x", netns="/run/netns/none", ifname="eth0")
    refused(
        cni_target.call("ADD", '{"cniVersion": "1.0.0", "name": ', env), "ADD of bad JSON", (6,)
    )


def test_unknown_version_is_refused(cni_target: Target, pods: Pods) -> None:
    call, _cid, netns = pods.add("9.9.9")
    err = refused(call, 'ADD with cniVersion "9.9.9"', (1,))
    assert "9.9.9" in err["msg"] + err.get("details", ""), f"the version is not named: {err}"
    assert "eth0" not in links(netns), "a refused ADD left eth0 in the pod"


def test_missing_netns_is_refused_and_leaves_nothing(cni_target: Target, pods: Pods) -> None:
    version = highest(cni_target, "1.0.0")
    assert cni_target.node is not None
    before = links(cni_target.node.path)
    conf = cni_target.config(version, pods.network, "tiny")
    env = cni_target.env("ADD", containerid="cnitest-nonet", netns="/run/netns/podlab-no-such",
                         ifname="eth0")  # fmt: skip
    refused(cni_target.call("ADD", conf, env), "ADD into a netns that does not exist")
    ok(cni_target.call("DEL", conf, cni_target.env("DEL", containerid="cnitest-nonet",
                                                   netns="", ifname="eth0")),
       "DEL after the failed ADD")  # fmt: skip
    new = links(cni_target.node.path) - before - {"cnitiny0", "cni0", "cnitest0"}
    assert not new, f"the failed ADD left node interfaces: {new}"
    fill(pods, version, cni_target.tiny_capacity)  # no address leaked


def test_exhausted_pool_is_refused_and_del_leaves_nothing(cni_target: Target, pods: Pods) -> None:
    """A full pool is an error; after the runtime's DEL (which the spec requires after a
    failed ADD) nothing of the attempt is left in the pod or on the node."""
    version = highest(cni_target, "1.0.0")
    fill(pods, version, cni_target.tiny_capacity)
    assert cni_target.node is not None
    before = links(cni_target.node.path)
    call, cid, netns = pods.add(version, pool="tiny")
    capacity = cni_target.tiny_capacity
    refused(call, f"ADD number {capacity + 1} into a pool of {capacity}")
    ok(pods.call("DEL", cid, netns, pods.conf_of(cid)), "DEL after the failed ADD")
    assert "eth0" not in links(netns), "eth0 of the failed ADD is still in the pod after DEL"
    assert links(cni_target.node.path) == before, "the failed ADD left a node interface"


def test_bad_interface_name_is_refused(cni_target: Target, pods: Pods) -> None:
    assert cni_target.node is not None
    netns = cni_target.node.container("ifname")
    conf = cni_target.config(highest(cni_target), pods.network)
    env = cni_target.env("ADD", containerid="cnitest-ifname", netns=netns,
                         ifname="a-name-longer-than-15")  # fmt: skip
    refused(cni_target.call("ADD", conf, env), "ADD with a 21-character CNI_IFNAME", (4,))
    nsutil.remove(netns)


# -- concurrency -------------------------------------------------------------------------
def test_concurrent_adds_get_distinct_addresses(cni_target: Target, pods: Pods) -> None:
    version = highest(cni_target)
    count = 20
    with ThreadPoolExecutor(count) as pool:
        calls = list(pool.map(lambda _i: pods.add(version), range(count)))
    results = [ok(c, f"concurrent ADD {cid}") for c, cid, _n in calls]
    got = [address(r) for r in results]
    assert len(set(got)) == count, f"duplicate addresses among {count} concurrent ADDs: {got}"
    for (_c, _cid, netns), addr in zip(calls, got, strict=True):
        assert addr in addresses(netns), f"{netns}: eth0 lacks {addr}"
    with ThreadPoolExecutor(count) as pool:
        dels = list(pool.map(lambda m: pods.call("DEL", m[1], m[2], pods.conf_of(m[1])), calls))
    for d in dels:
        ok(d, "concurrent DEL")


# -- chaining ----------------------------------------------------------------------------
CHAIN: list[dict[str, Any]] = [
    {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.proxy_arp": "1"}},
    {"type": "portmap", "capabilities": {"portMappings": True},
     "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80,
                                         "protocol": "tcp"}]}},
    {"type": "bandwidth", "ingressRate": 8000000, "ingressBurst": 80000},
]  # fmt: skip


def _run(
    target: Target, plugin: str, command: str, conf: dict[str, Any], env: dict[str, str]
) -> Call:
    assert target.node is not None
    exe = str(REFERENCE_DIR / plugin) if plugin != target.plugin else target.binary()
    res = target.node.exec([exe], json.dumps(conf).encode(), env)
    return Call(f"{plugin} {command}", res.returncode, res.stdout.decode(), res.stderr.decode())


def test_chaining_with_reference_plugins_passes_prevresult_through(
    cni_target: Target, pods: Pods
) -> None:
    """The target first, then Debian's tuning, portmap and bandwidth, as a runtime runs a list."""
    version = highest(cni_target, "1.0.0")
    assert cni_target.node is not None
    node = cni_target.node
    netns = node.container("chain")
    cid = "cnitest-chain"
    env = cni_target.env("ADD", containerid=cid, netns=netns, ifname="eth0")
    first_conf = cni_target.config(version, pods.network)
    confs: list[dict[str, Any]] = [first_conf]
    confs += [{**c, "cniVersion": version, "name": pods.network} for c in CHAIN]
    prev: dict[str, Any] | None = None
    try:
        for conf in confs:
            call = _run(cni_target, conf["type"], "ADD",
                        conf if prev is None else {**conf, "prevResult": prev}, env)  # fmt: skip
            result = ok(call, f"chained ADD of {conf['type']}")
            if prev is not None:
                assert result["ips"] == prev["ips"], f"{conf['type']} lost prevResult's ips"
            prev = result
        assert prev is not None
        ip = address(prev).split("/")[0]
        sysctl = subprocess.run(["nsenter", f"--net={netns}", "cat",
                                 "/proc/sys/net/ipv4/conf/eth0/proxy_arp"],
                                capture_output=True, text=True).stdout.strip()  # fmt: skip
        assert sysctl == "1", f"tuning did not set proxy_arp in the pod: {sysctl!r}"
        nat = node.exec(["iptables-save", "-t", "nat"]).stdout.decode()
        assert f"{ip}:80" in nat, f"portmap made no DNAT to {ip}:80:\n{nat[-800:]}"
        host_ifs = [i["name"] for i in prev.get("interfaces", []) if not i.get("sandbox")]
        qdiscs = node.exec(["tc", "qdisc", "show"]).stdout.decode()
        assert "tbf" in qdiscs, f"bandwidth made no tbf qdisc (host side {host_ifs}): {qdiscs}"
    finally:
        denv = cni_target.env("DEL", containerid=cid, netns=netns, ifname="eth0")
        dels = []
        for c in reversed(confs):
            dconf = c if prev is None else {**c, "prevResult": prev}
            dels.append(_run(cni_target, c["type"], "DEL", dconf, denv))
        nsutil.remove(netns)
    for d in dels:
        ok(d, "chained DEL")
    nat = node.exec(["iptables-save", "-t", "nat"]).stdout.decode()
    assert f"{ip}:80" not in nat, "portmap's DNAT outlived DEL"
