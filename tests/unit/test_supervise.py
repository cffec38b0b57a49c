"""Pod process supervision (harness/agent/supervise.py): exits learnt at once, restarts paced
as the kubelet paces them (CrashLoopBackOff)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

from harness.agent.supervise import INITIAL_S, MAX_S, CrashLoop, ExitWatcher


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_crash_loop_restarts_at_once_then_waits_10_s_doubling_to_300() -> None:
    clock = Clock()
    loop = CrashLoop(clock)
    k = ("default", "web")
    waits = []
    for _ in range(8):  # the container exits right after each start
        waits.append(loop.exited(k))
        assert loop.waiting(k)
        clock.t += waits[-1]
        assert loop.remaining(k) == 0
        loop.restarted(k)
        assert not loop.waiting(k)
        clock.t += 1.0
    assert waits == [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert (INITIAL_S, MAX_S) == (10.0, 300.0)


def test_crash_loop_forgets_a_container_that_ran_ten_minutes() -> None:
    clock = Clock()
    loop = CrashLoop(clock)
    k = ("default", "web")
    loop.exited(k)
    loop.restarted(k)
    clock.t += 1
    assert loop.exited(k) == 10.0
    clock.t += 10
    loop.restarted(k)
    clock.t += 2 * MAX_S + 1  # ran fine for more than 600 s: at once again, back-off anew
    assert loop.exited(k) == 0.0
    loop.restarted(k)
    clock.t += 1
    assert loop.exited(k) == 10.0
    loop.forget(k)
    assert not loop.waiting(k) and loop.exited(k) == 0.0


def test_exit_watcher_learns_of_a_childs_exit_at_once_and_of_a_non_child() -> None:
    woke = threading.Event()
    w = ExitWatcher(on_exit=woke.set)
    child = subprocess.Popen(["sleep", "60"])
    # a process that is not our child: started by a shell that exits at once
    out = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], capture_output=True)
    orphan = int(out.stdout)
    try:
        w.watch(child.pid)
        w.watch(orphan)
        assert not woke.wait(0.3) and w.take_exited() == set()  # control: both alive
        child.kill()
        assert woke.wait(5), "the child's exit was not noticed"
        assert w.take_exited() == {child.pid}
        woke.clear()
        os.kill(orphan, signal.SIGKILL)
        assert woke.wait(5), "the non-child's exit was not noticed"
        assert w.take_exited() == {orphan}
    finally:
        child.kill()
        child.wait()
        w.close()


def test_exit_watcher_counts_a_pid_in_another_namespace_as_exited() -> None:
    """An adopted pid (from the state file of an earlier agent run) that no longer lives
    in the pod's netns was recycled: it counts as exited, it is not watched."""
    w = ExitWatcher()
    try:
        w.watch(os.getpid(), netns_path="/proc/1/ns/user")  # not a netns of ours
        assert w.take_exited() == {os.getpid()}
        w.watch(1_000_000_000)  # no such pid
        assert w.take_exited() == {1_000_000_000}
    finally:
        w.close()


def test_exit_watcher_wakes_when_a_back_off_ends() -> None:
    woke = threading.Event()
    w = ExitWatcher(on_exit=woke.set)
    try:
        w.wake_in(0.2)
        assert woke.wait(5)
        assert w.take_exited() == set()
    finally:
        w.close()
