"""The quiet lock: shared holders run together, an exclusive one alone and unstarved."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from harness.conformance import quiet


def _hold(lock: Path, exclusive: bool, seconds: float, log: list[str], name: str) -> None:
    with quiet.hold(lock, exclusive):
        log.append(f"{name}+")
        time.sleep(seconds)
        log.append(f"{name}-")


def _start(*args: object) -> threading.Thread:
    t = threading.Thread(target=_hold, args=args)
    t.start()
    return t


def test_shared_holders_overlap(tmp_path: Path) -> None:
    log: list[str] = []
    lock = tmp_path / "q.lock"
    a = _start(lock, False, 1.0, log, "a")
    time.sleep(0.3)
    b = _start(lock, False, 0.1, log, "b")
    a.join(), b.join()
    assert log == ["a+", "b+", "b-", "a-"]


def test_an_exclusive_holder_waits_and_then_goes_before_later_shared_ones(tmp_path: Path) -> None:
    log: list[str] = []
    lock = tmp_path / "q.lock"
    # gaps of 0.3 s let each thread reach its lock before the next starts (a loaded machine)
    first = _start(lock, False, 1.2, log, "s1")
    time.sleep(0.3)
    quiet_one = _start(lock, True, 0.2, log, "x")
    time.sleep(0.3)
    later = _start(lock, False, 0.05, log, "s2")  # queues behind the waiting exclusive one
    for t in (first, quiet_one, later):
        t.join()
    assert log == ["s1+", "s1-", "x+", "x-", "s2+", "s2-"]


def test_a_holder_that_is_gone_frees_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "q.lock"
    with quiet.hold(lock, True) as waited:
        assert waited < 1.0
    with quiet.hold(lock, True) as waited:
        assert waited < 1.0
