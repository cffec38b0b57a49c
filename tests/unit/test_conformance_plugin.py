"""The pytest plugin in a pytest of its own (pytester): checks, measurements, matrix, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.conformance import cli

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "topologies" / "single-cluster.clab.yml"
# Installed, the pytest11 entry point loads the plugin by itself; ask for it only otherwise.
PLUGIN = () if cli.plugin_installed() else ("-p", "harness.conformance.plugin")

SUITE = """
import pytest

@pytest.mark.scenario(1)
def test_passes(record):
    record("latency_p50_s", 0.002, "s", labels={"path": "pod-pod"})

@pytest.mark.scenario(3)
def test_fails():
    assert 1450 == 1500, "pod-a (c1-w1) eth0 MTU is 1450, expected 1500"

@pytest.mark.scenario(30)
def test_skips():
    pytest.skip("lab t: no outside host")

def test_not_a_scenario():
    pass
"""


def _results(path: Path) -> dict:
    files = list(path.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_each_scenario_test_becomes_a_check_with_its_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    out = pytester.path / "out"
    result = pytester.runpytest_inprocess(*PLUGIN, f"--results={out}")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    data = _results(out)
    checks = {c["name"]: c for c in data["checks"]}
    assert set(checks) == {"test_passes", "test_fails", "test_skips"}
    assert checks["test_passes"]["outcome"] == "passed" and checks["test_passes"]["scenario"] == 1
    assert checks["test_fails"]["outcome"] == "failed"
    assert "eth0 MTU is 1450, expected 1500" in checks["test_fails"]["message"]
    assert checks["test_skips"] == {**checks["test_skips"], "outcome": "skipped",
                                    "message": "lab t: no outside host"}  # fmt: skip
    (m,) = data["measurements"]
    assert (m["name"], m["unit"], m["scenario"]) == ("latency_p50_s", "s", 1)
    assert m["labels"] == {"test": "test_passes", "path": "pod-pod"}
    assert data["finished_at"] is not None


def test_a_bad_unit_fails_the_test_that_recorded_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.scenario(28)
        def test_bad(record):
            record("throughput", 1.0, "gbit")
        """
    )
    out = pytester.path / "out"
    result = pytester.runpytest_inprocess(*PLUGIN, f"--results={out}")
    result.assert_outcomes(failed=1)
    assert _results(out)["checks"][0]["outcome"] == "failed"


def test_sessions_without_scenarios_write_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    out = pytester.path / "out"
    pytester.runpytest_inprocess(*PLUGIN, f"--results={out}")
    assert not out.exists()


def test_suites_without_a_lab_are_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_needs_lab(lab):\n    pass\n")
    result = pytester.runpytest_inprocess(*PLUGIN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*podlab suites need a lab: pass --lab NAME*"])


def test_unknown_mode_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess(*PLUGIN, "--mode=geneve")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown mode 'geneve'*"])


def test_mode_matrix_parametrizes_and_groups_by_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_b="def test_one(mode):\n    pass\ndef test_two(mode):\n    pass\n",
    )
    result = pytester.runpytest_inprocess(
        *PLUGIN, f"--topology={TOPOLOGY}",
        "--mode=host-gw", "--mode=vxlan+wireguard", "--collect-only", "-q",
    )  # fmt: skip
    ids = [line for line in result.outlines if "::" in line]
    assert ids == [
        "test_b.py::test_one[host-gw]",
        "test_b.py::test_two[host-gw]",
        "test_b.py::test_one[vxlan+wireguard]",
        "test_b.py::test_two[vxlan+wireguard]",
    ]


def test_default_mode_is_the_topology_s(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one(mode):\n    pass\n")
    result = pytester.runpytest_inprocess(*PLUGIN, f"--topology={TOPOLOGY}", "--collect-only", "-q")
    assert "test_default_mode_is_the_topology_s.py::test_one[vxlan]" in result.outlines


def test_podlab_test_runs_the_shipped_suites_with_junit(tmp_path: Path) -> None:
    parser = cli.argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(
        ["test", "--lab", "t-x", "--mode", "bgp", "--mode", "vxlan", "--results", str(tmp_path)]
    )
    argv = cli.pytest_argv(args, stamp="20260101T000000Z")
    assert argv[argv.index("--pyargs") + 1] == cli.SUITES
    assert (cli.PLUGIN in argv) == (not cli.plugin_installed())
    assert f"--junitxml={tmp_path / 'junit-20260101T000000Z.xml'}" in argv
    assert {f"--results={tmp_path}", "--lab=t-x", "--mode=bgp", "--mode=vxlan"} <= set(argv)
    assert args.func is cli.cmd_test
    args = parser.parse_args(
        ["test", "--lab", "t-x", "--matrix", "full", "--cluster", "c2", "--part", "2/2",
         "--scope", "cluster", "--quiet-lock", "/tmp/q", "--results", str(tmp_path)]
    )  # fmt: skip
    argv = cli.pytest_argv(args, stamp="20260101T000000Z")
    assert {"--matrix=full", "--cluster=c2", "--part=2/2", "--quiet-lock=/tmp/q",
            "--scope=cluster",
            f"--junitxml={tmp_path / 'junit-20260101T000000Z-c2.xml'}"} <= set(argv)  # fmt: skip
    args = parser.parse_args(["test", "--lab", "t-x", "--entry", "bgp", "--deal", "1/2"])
    assert {"--entry=bgp", "--deal=1/2"} <= set(cli.pytest_argv(args, stamp="x"))
    args = parser.parse_args(["test", "--lab", "t-x", "--entry", "vxlan", "--ssh-keep", "c1",
                              "--lab-decisions"])  # fmt: skip
    assert {"--ssh-keep=c1", "--lab-decisions"} <= set(cli.pytest_argv(args, stamp="x"))
    # hypothesis's plugin (podlab's own tests) is kept out of the suites' sessions
    blocked = [argv[i + 1] for i, a in enumerate(argv) if a == "-p"]
    assert "no:hypothesispytest" in blocked and "no:cacheprovider" in blocked


def test_podlab_test_passes_the_throughput_rounds_on(tmp_path: Path) -> None:
    parser = cli.argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["test", "--lab", "t-x", "--tput-rounds", "3",
                              "--tput-seconds", "2", "--results", str(tmp_path)])  # fmt: skip
    argv = cli.pytest_argv(args, stamp="20260101T000000Z")
    assert {"--tput-rounds=3", "--tput-seconds=2"} <= set(argv)
    plain = cli.pytest_argv(parser.parse_args(["test", "--lab", "t-x"]), stamp="x")
    assert not [a for a in plain if a.startswith("--tput")]


def test_podlab_test_needs_a_lab_or_a_topology() -> None:
    parser = cli.argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["test"])


@pytest.mark.parametrize(
    ("test_id", "mode", "rest"),
    [
        ("host-gw-same-node-icmp", "host-gw", "same-node-icmp"),
        ("vxlan+wireguard", "vxlan+wireguard", ""),
        ("tcp-1-host-gw", "host-gw", "tcp-1"),
        ("cross-node-udp-tcp", "udp", "cross-node-tcp"),
    ],
)
def test_check_names_leave_the_mode_out(test_id: str, mode: str, rest: str) -> None:
    from harness.conformance.plugin import strip_id

    assert strip_id(test_id, mode) == rest


def test_tests_with_their_own_mode_are_left_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("mode", ["a", "b"])
        def test_own(mode):
            assert mode in ("a", "b")

        @pytest.mark.parametrize(("mode", "x"), [("a", 1)])
        def test_own_tuple(mode, x):
            assert mode == "a"
        """
    )
    result = pytester.runpytest_inprocess(*PLUGIN, f"--topology={TOPOLOGY}", "--mode=vxlan")
    result.assert_outcomes(passed=3)


MATRIX_SUITE = """
import pytest

@pytest.mark.scenario(1)
def test_light(mode):
    pass

@pytest.mark.scenario(10)
def test_heavy(mode):
    pass

@pytest.mark.scenario(20)
def test_strict(mode):
    pass
"""


def test_the_matrix_decides_before_anything_runs_and_records_why(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_m=MATRIX_SUITE)
    out = pytester.path / "out"
    result = pytester.runpytest_inprocess(
        *PLUGIN, f"--topology={TOPOLOGY}", "--matrix=default", f"--results={out}",
        "--collect-only", "-q",
    )  # fmt: skip
    ids = {line.split("::")[1] for line in result.outlines if "::" in line}
    assert "test_light[bgp]" in ids and "test_heavy[host-gw]" in ids
    assert "test_heavy[bgp]" not in ids and "test_strict[vxlan]" not in ids
    assert {"test_strict[host-gw+wireguard]", "test_heavy[calico-vxlan+wireguard]"} <= ids
    result.stdout.fnmatch_lines(["*matrix default (default selection), 9 entries:*",
                                 "*heavy checks in host-gw, calico-vxlan+wireguard*"])  # fmt: skip
    data = _results(out)
    checks = {(c["name"], c["mode"]): c for c in data["checks"]}
    assert checks[("test_strict", "vxlan")]["outcome"] == "not-applicable"
    assert checks[("test_strict", "vxlan")]["message"].endswith(
        "no encryption (runs in MODE+wireguard)"
    )
    assert checks[("test_heavy", "bgp")]["outcome"] == "not-selected"
    assert "in host-gw, calico-vxlan+wireguard" in checks[("test_heavy", "bgp")]["message"]
    assert ("test_light", "bgp") not in checks  # selected: recorded when it runs
    plan = data["plan"]
    assert plan["matrix"] == "default" and plan["heavy_cover"] == [
        "host-gw", "calico-vxlan+wireguard"]  # fmt: skip
    by_number = {s["number"]: s for s in plan["scenarios"]}
    assert by_number[10]["tests"] == 1 and by_number[2]["tests"] == 0
    assert by_number[37]["title"] == "Kernel-only features (VM labs)"


def test_full_matrix_selects_everything_that_applies(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_m=MATRIX_SUITE)
    out = pytester.path / "out"
    result = pytester.runpytest_inprocess(
        *PLUGIN, f"--topology={TOPOLOGY}", "--matrix=full", f"--results={out}",
        "--collect-only", "-q",
    )  # fmt: skip
    ids = [line for line in result.outlines if "::" in line]
    assert len(ids) == 14 + 14 + 7  # strict mode only where WireGuard is on
    outcomes = {c["outcome"] for c in _results(out)["checks"]}
    assert outcomes == {"not-applicable"}


def test_not_applicable_at_run_time_is_told_apart_and_time_includes_setup(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import time
        import pytest
        from harness.conformance.catalogue import not_applicable

        @pytest.fixture
        def slow():
            time.sleep(0.3)

        @pytest.mark.scenario(1)
        def test_na():
            not_applicable("lab t: the cluster has a single node that runs pods")

        @pytest.mark.scenario(1)
        def test_timed(slow):
            pass
        """
    )
    out = pytester.path / "out"
    pytester.runpytest_inprocess(*PLUGIN, f"--results={out}").assert_outcomes(passed=1, skipped=1)
    checks = {c["name"]: c for c in _results(out)["checks"]}
    assert checks["test_na"]["outcome"] == "not-applicable"
    assert checks["test_na"]["message"] == "lab t: the cluster has a single node that runs pods"
    assert checks["test_timed"]["duration_s"] >= 0.3


def test_an_unknown_scenario_number_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.scenario(98)\ndef test_x(mode):\n    pass\n")
    result = pytester.runpytest_inprocess(*PLUGIN, f"--topology={TOPOLOGY}", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*scenario 98 is not in the catalogue*"])


def test_a_part_runs_its_entries_and_records_only_their_decisions(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_m=MATRIX_SUITE)
    out = pytester.path / "out"
    result = pytester.runpytest_inprocess(
        *PLUGIN, f"--topology={TOPOLOGY}", "--matrix=default", "--part=2/2", "--cluster=c1",
        f"--results={out}", "--collect-only", "-q",
    )  # fmt: skip
    ids = {line.split("::")[1] for line in result.outlines if "::" in line}
    heavy = {"test_heavy[host-gw]", "test_heavy[calico-vxlan+wireguard]"}
    assert len(heavy & ids) == 1  # the two entries of the cover go to different parts
    result.stdout.fnmatch_lines(["*part 2/2 on cluster c1: *"])
    data = _results(out)
    mine = {m["mode"] for m in data["plan"]["modes"] if m["cluster"] == "c1"}
    assert {i.partition("[")[2].rstrip("]") for i in ids} == mine
    assert 0 < len(mine) < 9
    assert {c["mode"] for c in data["checks"]} <= mine
    assert all(c["labels"] == {"cluster": "c1"} for c in data["checks"])
    bad = pytester.runpytest_inprocess(*PLUGIN, f"--topology={TOPOLOGY}", "--part=3/2")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    none = pytester.runpytest_inprocess(
        *PLUGIN, f"--topology={TOPOLOGY}", "--matrix=default", "--cluster=c9", "--collect-only"
    )
    none.stderr.fnmatch_lines(["*--cluster c9: lab single-cluster has no such cluster (c1)*"])


def test_a_lab_test_outside_the_matrix_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.scenario(1)\ndef test_x(lab):\n    pass\n")
    result = pytester.runpytest_inprocess(*PLUGIN, f"--topology={TOPOLOGY}", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*must take the `mode` fixture*"])


def test_a_scope_keeps_only_its_scenarios(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n@pytest.mark.scenario(1)\ndef test_c(mode):\n    pass\n"
        "@pytest.mark.scenario(24)\ndef test_l(mode):\n    pass\n"
    )
    two = REPO / "topologies" / "two-clusters.clab.yml"
    for scope, kept in (("lab", "test_l"), ("cluster", "test_c")):
        result = pytester.runpytest_inprocess(
            *PLUGIN, f"--topology={two}", "--mode=vxlan", f"--scope={scope}", "--collect-only",
            "-q",
        )  # fmt: skip
        assert [line.split("::")[1] for line in result.outlines if "::" in line] == [
            f"{kept}[vxlan]"]  # fmt: skip
        result.stdout.fnmatch_lines(["*whole-lab (mesh) scenarios: 24 in vxlan"])


def test_a_run_starts_with_the_entry_its_lab_already_runs() -> None:
    from harness.conformance.modes import ModeSpec
    from harness.conformance.plugin import starting_first

    part = tuple(ModeSpec.parse(m) for m in ("vxlan", "bgp", "calico-vxlan+wireguard"))
    moved = starting_first(part, ModeSpec.parse("calico-vxlan+wireguard"))
    assert [str(e) for e in moved] == ["calico-vxlan+wireguard", "vxlan", "bgp"]
    # a mode outside the part, or none known: the matrix's order
    assert starting_first(part, ModeSpec.parse("host-gw")) == part
    assert starting_first(part, None) == part
