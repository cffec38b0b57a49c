"""podlab-cni's pure parts: env and config checks (skel's rules), results, conflists, schemas."""

from __future__ import annotations

import argparse
import json

import pytest

from harness.cni import netconf, spec
from harness.cni.runtime import (
    Attachment,
    ConfigListError,
    NetworkList,
    Runtime,
    select_version,
)
from harness.conformance.cni import cli, schema

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}
CONF = {"cniVersion": "1.0.0", "name": "podlab", "type": "podlab-cni", "mode": "bridge"}


def code_of(fn, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(spec.CniError) as info:
        fn(*args)
    return info.value.code, info.value.msg + " " + info.value.details


@pytest.mark.parametrize(
    ("change", "code", "named"),
    [
        ({"CNI_COMMAND": ""}, 4, "CNI_COMMAND"),
        ({"CNI_COMMAND": "FROB"}, 4, "FROB"),
        ({"CNI_CONTAINERID": ""}, 4, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "-bad/id"}, 4, "CNI_CONTAINERID"),
        ({"CNI_NETNS": ""}, 4, "CNI_NETNS"),
        ({"CNI_IFNAME": "a-name-longer-than-15"}, 4, "CNI_IFNAME"),
        ({"CNI_IFNAME": "et/h0"}, 4, "CNI_IFNAME"),
        ({"CNI_PATH": ""}, 4, "CNI_PATH"),
    ],
)
def test_bad_environment_is_code_4_naming_the_variable(change, code, named) -> None:  # type: ignore[no-untyped-def]
    got, text = code_of(spec.request_from_env, {**ENV, **change}, json.dumps(CONF))
    assert got == code and named in text, text


def test_del_needs_no_netns_and_version_needs_nothing() -> None:
    assert spec.request_from_env({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, "{}").netns == ""
    req = spec.request_from_env({"CNI_COMMAND": "VERSION"}, '{"cniVersion": "0.4.0"}')
    assert spec.version_result(req.stdin or '{"cniVersion": "0.4.0"}')["cniVersion"] == "0.4.0"


@pytest.mark.parametrize(
    ("stdin", "command", "code"),
    [
        ("{not json", "ADD", 6),
        ("[1, 2]", "ADD", 6),
        (json.dumps({**CONF, "name": ""}), "ADD", 7),
        (json.dumps({**CONF, "name": "bad name"}), "ADD", 7),
        (json.dumps({**CONF, "cniVersion": "9.9.9"}), "ADD", 1),
        (json.dumps({**CONF, "cniVersion": "one"}), "ADD", 6),
        (json.dumps({**CONF, "cniVersion": "0.3.1"}), "CHECK", 1),
        (json.dumps({**CONF, "cniVersion": "1.0.0"}), "GC", 1),
        (json.dumps({**CONF, "cniVersion": "1.0.0"}), "STATUS", 1),
    ],
)
def test_config_errors_have_the_spec_codes(stdin: str, command: str, code: int) -> None:
    req = spec.request_from_env({**ENV, "CNI_COMMAND": command}, stdin)
    assert code_of(spec.parse_config, req)[0] == code


def test_an_error_is_json_with_version_code_and_message() -> None:
    err = spec.CniError(11, "no free address in 10.244.1.0/24", "253 reserved")
    assert err.to_json("1.0.0") == {
        "cniVersion": "1.0.0", "code": 11,
        "msg": "no free address in 10.244.1.0/24", "details": "253 reserved",
    }  # fmt: skip
    assert not schema.error_problems(err.to_json())


RESULT = {
    "interfaces": [
        {"name": "cni0", "mac": "0a:00:00:00:00:01"},
        {"name": "veth1", "mac": "0a:00:00:00:00:02", "mtu": 1450},
        {"name": "eth0", "mac": "0a:00:00:00:00:03", "mtu": 1450, "sandbox": "/run/netns/x"},
    ],
    "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
    "dns": {},
}


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_results_take_each_versions_shape_and_pass_its_schema(version: str) -> None:
    out = spec.convert_result(RESULT, version)
    assert out["cniVersion"] == version
    assert ("version" in out["ips"][0]) == (version < "1.0.0")
    assert ("mtu" in out["interfaces"][2]) == (version == "1.1.0")
    assert not schema.result_problems(out, version, "eth0", "/run/netns/x")


def test_schema_problems_catch_what_runtimes_rely_on() -> None:
    """Negative controls: each broken result is caught."""
    good = spec.convert_result(RESULT, "1.0.0")
    broken = {
        "index out of range": {**good, "ips": [{**good["ips"][0], "interface": 7}]},
        "wrong sandbox": {**good, "interfaces": [*good["interfaces"][:2],
                                                 {**good["interfaces"][2], "sandbox": "/x"}]},
        "no ips": {**good, "ips": []},
        "bad mac": {**good, "interfaces": [{"name": "cni0", "mac": "zz"}]},
        "0.4 field in 1.0": {**good, "ips": [{**good["ips"][0], "version": "4"}]},
        "wrong cniVersion": {**good, "cniVersion": "0.4.0"},
    }  # fmt: skip
    for what, result in broken.items():
        assert schema.result_problems(result, "1.0.0", "eth0", "/run/netns/x"), what
    assert schema.error_problems(None) and schema.error_problems({"code": 0, "msg": ""})


@pytest.mark.parametrize(
    ("conf", "code", "key"),
    [
        ({**CONF, "mode": "tunnel"}, 7, "mode"),
        ({**CONF, "mtu": "1500"}, 7, "mtu"),
        ({**CONF, "mtu": 100}, 7, "mtu"),
        ({**CONF, "hairpinMode": "yes"}, 7, "hairpinMode"),
        ({**CONF, "ipam": {"type": "host-local"}}, 2, "ipam"),
    ],
)
def test_plugin_keys_are_checked_by_name(conf: dict, code: int, key: str) -> None:  # type: ignore[type-arg]
    got, text = code_of(netconf.parse, conf)
    assert got == code and key in text, text


def test_wanted_ip_comes_from_the_ips_capability_then_cni_args() -> None:
    req = spec.request_from_env({**ENV, "CNI_ARGS": "IgnoreUnknown=1;IP=10.244.1.9"}, "{}")
    assert netconf.parse(CONF).wanted_ip(req) == "10.244.1.9"
    conf = netconf.parse({**CONF, "runtimeConfig": {"ips": ["10.244.1.7/24"]}})
    assert conf.wanted_ip(req) == "10.244.1.7/24"


def test_subnet_file_missing_or_partial_is_try_again_later(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert code_of(netconf.read_subnet_file, str(tmp_path / "none"))[0] == 11
    (tmp_path / "s.env").write_text("FLANNEL_NETWORK=10.244.0.0/16\n")
    assert code_of(netconf.read_subnet_file, str(tmp_path / "s.env"))[0] == 11
    (tmp_path / "s.env").write_text(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\n"
    )
    node = netconf.read_subnet_file(str(tmp_path / "s.env"))
    assert (str(node.subnet), str(node.gateway.ip), node.mtu) == (
        "10.244.3.0/24",
        "10.244.3.1",
        1450,
    )


def test_a_runtime_picks_the_highest_version_it_and_the_list_allow() -> None:
    assert select_version({"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"]}) == "1.1.0"
    assert select_version({"cniVersion": "1.0.0"}, ("0.4.0", "1.0.0")) == "1.0.0"
    with pytest.raises(ConfigListError):
        select_version({"cniVersion": "2.0.0"})
    listed = netconf.conflist("podlab", "bridge", 1450, versions=["1.0.0", "1.1.0"])
    net = NetworkList.from_bytes(json.dumps(listed).encode())
    assert (net.version, net.plugins[0]["type"]) == ("1.1.0", "podlab-cni")


def test_per_plugin_config_gets_name_version_runtime_config_and_prev_result() -> None:
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    listed = netconf.conflist("podlab", "routed", 1500, chain=[portmap])
    net = NetworkList.from_bytes(json.dumps(listed).encode())
    att = Attachment("c1", "/run/netns/x", capability_args={"portMappings": [1], "ips": ["a"]})
    c0 = Runtime.plugin_conf(net, net.plugins[0], att, None)
    c1 = Runtime.plugin_conf(net, net.plugins[1], att, {"ips": []})
    assert c0["runtimeConfig"] == {"ips": ["a"]} and "capabilities" not in c0
    assert "prevResult" not in c0 and c1["prevResult"] == {"ips": []}
    assert c1["runtimeConfig"] == {"portMappings": [1]} and c1["name"] == "podlab"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"name": "x"}', "plugins"),
        ('{"name": "bad name", "plugins": [{"type": "a"}]}', "name"),
        ('{"name": "x", "cniVersion": "1.0.0", "plugins": [{}]}', "plugins[0].type"),
        ("nope", "not valid JSON"),
    ],
)
def test_bad_conflists_are_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigListError) as info:
        NetworkList.from_bytes(text.encode(), "f.conflist")
    assert "f.conflist" in str(info.value) and message in str(info.value)


def test_cni_test_table_has_a_column_per_plugin_and_controls_do_not_judge() -> None:
    args = argparse.Namespace(target=[], control=None)
    assert cli.targets_of(args) == (["podlab", "podlab-routed"], ["reference"])
    args = argparse.Namespace(target=["reference"], control=["none"])
    assert cli.targets_of(args) == (["reference"], [])
    checks = [
        {"name": "r1", "mode": "podlab", "outcome": "passed"},
        {"name": "r1", "mode": "reference", "outcome": "failed", "message": "no GC"},
    ]
    rows = cli.table_rows(checks, ["podlab", "podlab-routed", "reference"])
    assert rows == [("r1", [("passed", ""), ("not run", ""), ("failed", "no GC")])]
    assert not cli.print_table(checks, ["podlab"], ["reference"])
    assert cli.print_table(checks, ["reference"], [])
