"""SIGTERM and SIGHUP unwind `podlab` like Ctrl-C (harness.cli.stop_like_ctrl_c): a
`kill`, a closed terminal or a CI time-out runs the same clean-up as an interrupt."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

# A child process, so the handlers installed never touch the test runner's own.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from harness import cli
    # what the caller ignores is inherited (a CI job under nohup ignores SIGHUP): set it
    signal.signal(signal.SIGHUP, signal.SIG_IGN if sys.argv[1] == "ignored" else signal.SIG_DFL)
    try:
        with cli.stop_like_ctrl_c():
            if sys.argv[1] == "hup":
                print("hup ignored", signal.getsignal(signal.SIGHUP) is signal.SIG_IGN)
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
    print("restored", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
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


def test_sighup_unwinds_too_and_the_handlers_come_back_after() -> None:
    out = _child("hup").stdout
    assert "terminated 1" in out and "restored True" in out and "hup ignored False" in out


def test_a_forked_child_dies_of_sigterm_as_by_default() -> None:
    """A fork without exec (a node's holder, a watchdog) inherits the handlers; there a
    SIGTERM must end the child, not unwind a copy of the parent's work."""
    code = textwrap.dedent("""
        import os, signal, time
        from harness import cli
        with cli.stop_like_ctrl_c():
            r, w = os.pipe()
            child = os.fork()
            if child == 0:
                os.write(w, b"up")  # (Python drops a signal that arrives during the fork)
                time.sleep(10)
                os._exit(0)  # not reached: the SIGTERM below ends it first
            os.read(r, 2)
            os.kill(child, signal.SIGTERM)
            _, status = os.waitpid(child, 0)
            print("child", os.WIFSIGNALED(status) and os.WTERMSIG(status))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=False)  # fmt: skip
    assert f"child {int(signal.SIGTERM)}" in res.stdout, res.stdout + res.stderr


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
