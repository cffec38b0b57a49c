"""SIGTERM and SIGHUP unwind `podlab` like Ctrl-C (harness.cli.stop_like_ctrl_c): a
`kill`, a closed terminal or a CI time-out runs the same clean-up as an interrupt."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A child process, so the handlers installed never touch the test runner's own.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from harness import cli
    if sys.argv[1] == "ignored":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    cli.stop_like_ctrl_c()
    try:
        try:
            os.kill(os.getpid(), signal.SIGHUP if sys.argv[1] == "hup" else signal.SIGTERM)
            time.sleep(5)
            print("not unwound")
        finally:
            print("finally ran")
            os.kill(os.getpid(), signal.SIGTERM)  # a second one during the clean-up
            time.sleep(0.2)
            print("clean-up finished")
    except cli.Terminated as exc:
        print("terminated", exc.signum)
    if sys.argv[1] == "ignored":
        print("hup", signal.getsignal(signal.SIGHUP) is signal.SIG_IGN)
""")


def _child(arg: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip


def test_sigterm_unwinds_once_and_a_second_one_does_not_stop_the_clean_up() -> None:
    res = _child("term")
    assert res.stdout.split("\n")[:3] == ["finally ran", "clean-up finished", "terminated 15"]
    assert "SIGTERM again: still cleaning up" in res.stderr


def test_sighup_unwinds_too() -> None:
    assert "terminated 1" in _child("hup").stdout


def test_a_signal_the_caller_ignores_stays_ignored() -> None:
    res = _child("ignored")  # nohup: SIGHUP ignored, SIGTERM still unwinds
    assert "hup True" in res.stdout and "terminated 15" in res.stdout


def test_main_exits_128_plus_the_signal() -> None:
    code = textwrap.dedent("""
        import os, signal, sys
        from harness import cli
        def verb(_args):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
        class Parser:  # a verb that is signalled while it runs
            def parse_args(self, argv):
                class Args: func = staticmethod(verb)
                return Args()
        cli.build_parser = Parser
        sys.exit(cli.main([]))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=False)  # fmt: skip
    assert res.returncode == 128 + 15, res.stderr
    assert "terminated (SIGTERM)" in res.stderr
