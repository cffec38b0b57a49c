"""`podlab exec pod/NAME -- CMD`: the ssh argv and its refusals."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from harness.api.cli import _split_ref, exec_options, is_pod_ref
from harness.api.exec import PodTarget, parse_pod_ref, pod_exec_argv
from harness.errors import UserError
from harness.probes.echo import NODE_PYTHON

TARGET = PodTarget("default", "web", "c1-w1", Path("/lab/ssh_config"))


def test_remote_command_keeps_argument_boundaries() -> None:
    cmd = ["sh", "-c", "echo 'a b' && hostname; exit 3"]
    argv = pod_exec_argv(TARGET, cmd)
    assert argv[:7] == ["ssh", "-F", "/lab/ssh_config", "-o", "BatchMode=yes", "-n", "c1-w1"]
    assert len(argv) == 8
    # The remote shell splits the one string back into exactly our argv.
    assert shlex.split(argv[7]) == [
        NODE_PYTHON,
        "-m",
        "harness.agent.podexec",
        "default",
        "web",
        "--",
        *cmd,
    ]


@pytest.mark.parametrize(
    ("stdin", "tty", "flags"), [(False, False, ["-n"]), (True, False, []), (True, True, ["-tt"])]
)
def test_stdin_and_tty_as_kubectl(stdin: bool, tty: bool, flags: list[str]) -> None:
    """No -i: the command reads nothing (ssh -n); -i: stdin flows; -t: a remote pty."""
    argv = pod_exec_argv(TARGET, ["cat"], stdin=stdin, tty=tty)
    assert argv[5:-2] == flags


@pytest.mark.parametrize("ref", ["pod/web", "po/web", "pods/web", "Pod/web"])
def test_pod_refs(ref: str) -> None:
    assert is_pod_ref(ref)
    assert parse_pod_ref(ref) == "web"


@pytest.mark.parametrize("ref", ["web", "c1-w1", "node/c1-w1", "pod/"])
def test_not_pod_refs(ref: str) -> None:
    assert not is_pod_ref(ref) or ref == "pod/"
    with pytest.raises(UserError, match="does not name a pod"):
        parse_pod_ref(ref)


def test_split_ref() -> None:
    assert _split_ref("pods", ["a", "b"]) == ("pods", ["a", "b"])
    assert _split_ref("pod/a", ["po/b"]) == ("pod", ["a", "b"])
    with pytest.raises(UserError, match="of one type"):
        _split_ref("pod/a", ["b"])


@pytest.mark.parametrize(
    ("argv", "namespace", "lab", "command"),
    [
        (["exec", "pod/web", "-n", "test", "--", "ls", "-l"], "test", None, ["ls", "-l"]),
        (["exec", "--lab", "x", "pod/web", "--", "sh", "-c", "a b"], "default", "x",
         ["sh", "-c", "a b"]),
        (["exec", "pod/web", "--namespace", "ns", "--", "ip", "-n", "x"], "ns", None,
         ["ip", "-n", "x"]),
        (["exec", "-it", "pod/web", "--", "sh"], "default", None, ["sh"]),
    ],
)  # fmt: skip
def test_exec_options_through_the_real_exec_verb(
    argv: list[str], namespace: str, lab: str | None, command: list[str]
) -> None:
    """`podlab exec` belongs to the lab area; pod options ride in its REMAINDER."""
    from harness.cli import build_parser

    args = build_parser().parse_args(argv)
    opts, cmd = exec_options(args.cmd, args)
    assert (opts.namespace, opts.lab, cmd) == (namespace, lab, command)


def test_exec_options_refuse_unknown_flags() -> None:
    import argparse

    with pytest.raises(UserError, match="unknown option --bogus"):
        exec_options(["--bogus", "--", "ls"], argparse.Namespace())
