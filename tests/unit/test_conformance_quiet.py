"""The quiet lock: shared holders run together, an exclusive one alone and unstarved."""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from harness.conformance import quiet


def _hold(held: AbstractContextManager[Any], seconds: float, log: list[str], name: str) -> None:
    with held:
        log.append(f"{name}+")
        time.sleep(seconds)
        log.append(f"{name}-")


def _start(*args: object) -> threading.Thread:
    """A thread holding ``args[0]`` (``quiet.hold`` or ``quiet.hold_claim``) a while."""
    t = threading.Thread(target=_hold, args=args)
    t.start()
    return t


def test_shared_holders_overlap(tmp_path: Path) -> None:
    log: list[str] = []
    lock = tmp_path / "q.lock"
    a = _start(quiet.hold(lock, False), 1.0, log, "a")
    time.sleep(0.3)
    b = _start(quiet.hold(lock, False), 0.1, log, "b")
    a.join(), b.join()
    assert log == ["a+", "b+", "b-", "a-"]


def test_an_exclusive_holder_waits_and_then_goes_before_later_shared_ones(tmp_path: Path) -> None:
    log: list[str] = []
    lock = tmp_path / "q.lock"
    # gaps of 0.3 s let each thread reach its lock before the next starts (a loaded machine)
    first = _start(quiet.hold(lock, False), 1.2, log, "s1")
    time.sleep(0.3)
    quiet_one = _start(quiet.hold(lock, True), 0.2, log, "x")
    time.sleep(0.3)
    later = _start(
        quiet.hold(lock, False), 0.05, log, "s2"
    )  # queues behind the waiting exclusive one
    for t in (first, quiet_one, later):
        t.join()
    assert log == ["s1+", "s1-", "x+", "x-", "s2+", "s2-"]


def test_a_holder_that_is_gone_frees_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "q.lock"
    with quiet.hold(lock, True) as waited:
        assert waited < 1.0
    with quiet.hold(lock, True) as waited:
        assert waited < 1.0


# The claims of scenario tests (quiet.claim): a measuring check holds the machine alone, a
# test marked ``breaks`` holds the machine shared and the clusters it breaks alone.
MESH = ("c1", "c2")


def test_an_ordinary_and_a_measuring_check_hold_the_clusters_they_touch_shared() -> None:
    assert quiet.claim(False, None, "c1", MESH, MESH) == quiet.Claim(False, ("c1",))
    assert quiet.claim(True, None, "c2", MESH, MESH) == quiet.Claim(True, ("c2",), turn=True)
    assert quiet.claim(False, None, None, MESH, MESH) == quiet.Claim(False, ("c1", "c2"))


def test_a_test_that_breaks_the_remote_cluster_holds_it_alone_and_the_machine_shared() -> None:
    assert quiet.claim(True, ("remote",), None, MESH, MESH) == quiet.Claim(
        False, ("c1",), ("c2",), turn=True
    )
    assert quiet.claim(True, ("local",), None, MESH, MESH) == quiet.Claim(
        False, ("c2",), ("c1",), turn=True
    )
    assert quiet.claim(True, (), None, MESH, MESH) == quiet.Claim(False, ("c1", "c2"), turn=True)
    # the mesh's order, not the lab's, says which cluster is the remote one
    assert quiet.claim(True, ("remote",), None, MESH, ("c2", "c1")).broken == ("c1",)


def test_without_a_mesh_a_breaks_marker_changes_nothing() -> None:
    assert quiet.claim(True, ("remote",), None, ("c1",), ()) == quiet.Claim(
        True, ("c1",), turn=True
    )


def test_a_waiting_quiet_test_holds_the_machine_and_its_clusters_alone() -> None:
    waits = quiet.Claim(True, (), ("c2",), turn=True, waits=True)
    assert quiet.claim(True, None, "c2", MESH, MESH, waits=True) == waits
    whole = quiet.claim(True, None, None, MESH, MESH, waits=True)
    assert whole.broken == ("c1", "c2") and whole.exclusive and whole.turn
    # an ordinary test gains nothing from the marker: it shares the machine anyway
    assert quiet.claim(False, None, "c2", MESH, MESH, waits=True) == quiet.Claim(False, ("c2",))
    with pytest.raises(ValueError, match=r"breaks .* or waits"):
        quiet.claim(True, ("local",), None, MESH, MESH, waits=True)


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="breaks\\(far\\): not a role"):
        quiet.claim(True, ("far",), None, MESH, MESH)


def test_a_breaker_overlaps_the_other_cluster_but_waits_for_its_own(tmp_path: Path) -> None:
    log: list[str] = []
    lock = tmp_path / "q.lock"
    c1 = _start(quiet.hold_claim(lock, quiet.Claim(False, ("c1",))), 1.5, log, "c1")
    c2 = _start(quiet.hold_claim(lock, quiet.Claim(False, ("c2",))), 0.6, log, "c2")
    time.sleep(0.3)
    cut = _start(
        quiet.hold_claim(lock, quiet.Claim(False, ("c1",), ("c2",))), 0.3, log, "cut"
    )  # waits for c2 only
    for t in (c1, c2, cut):
        t.join()
    assert log.index("c2-") < log.index("cut+") < log.index("cut-") < log.index("c1-")


def test_a_measuring_check_never_overlaps_a_breaker(tmp_path: Path) -> None:
    log: list[str] = []
    lock = tmp_path / "q.lock"
    cut = _start(quiet.hold_claim(lock, quiet.Claim(False, ("c1",), ("c2",))), 0.8, log, "cut")
    time.sleep(0.3)
    tput = _start(quiet.hold_claim(lock, quiet.Claim(True, ("c1",))), 0.1, log, "tput")
    cut.join(), tput.join()
    assert log == ["cut+", "cut-", "tput+", "tput-"]


# The quiet turn and the shared windows of a test marked ``waits`` (Holding.shared).
def _window(held: AbstractContextManager[quiet.Holding], alone_s: float, shared_s: float,
            log: list[str], name: str) -> None:  # fmt: skip
    """Hold a claim: ``alone_s`` with the machine alone, then a ``shared`` window of
    ``shared_s``, then alone again briefly."""
    with held as holding:
        log.append(f"{name}+")
        time.sleep(alone_s)
        with holding.shared():
            log.append(f"{name}~")
            time.sleep(shared_s)
        log.append(f"{name}=")
        time.sleep(0.1)
        log.append(f"{name}-")


WAITS = quiet.Claim(True, (), ("c2",), turn=True, waits=True)


def test_the_other_clusters_ordinary_checks_run_in_a_waiting_tests_window(tmp_path: Path) -> None:
    log: list[str] = []
    lock = tmp_path / "q.lock"
    w = threading.Thread(target=_window, args=(quiet.hold_claim(lock, WAITS), 0.5, 1.0, log, "w"))
    started = time.monotonic()
    w.start()
    time.sleep(0.2)
    c1 = _start(quiet.hold_claim(lock, quiet.Claim(False, ("c1",))), 0.2, log, "c1")
    c1.join()
    ran = time.monotonic() - started
    w.join()
    # c1 waits while the machine is alone (0.5 s), runs in the window, done before it ends
    assert ran >= 0.65 and log.index("c1-") < log.index("w=")
    assert log.index("w+") < log.index("c1+") and log[-2:] == ["w=", "w-"]


def test_a_window_shares_nothing_with_checks_of_its_cluster_or_quiet_ones(tmp_path: Path) -> None:
    log: list[str] = []
    lock = tmp_path / "q.lock"
    w = threading.Thread(target=_window, args=(quiet.hold_claim(lock, WAITS), 0.2, 0.8, log, "w"))
    w.start()
    time.sleep(0.4)  # in the window
    mesh = _start(quiet.hold_claim(lock, quiet.Claim(False, ("c1", "c2"))), 0.1, log, "mesh")
    tput = _start(quiet.hold_claim(lock, quiet.Claim(True, ("c1",), turn=True)), 0.1, log, "tput")
    cut = _start(
        quiet.hold_claim(lock, quiet.Claim(False, (), ("c1",), turn=True)), 0.1, log, "cut"
    )
    for t in (w, mesh, tput, cut):
        t.join()
    assert log.index("w-") < min(log.index(f"{n}+") for n in ("mesh", "tput", "cut"))


def test_the_window_ends_once_running_checks_end_and_new_ones_queue_behind_it(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    lock = tmp_path / "q.lock"
    w = threading.Thread(target=_window, args=(quiet.hold_claim(lock, WAITS), 0.1, 0.4, log, "w"))
    w.start()
    time.sleep(0.3)
    long = _start(quiet.hold_claim(lock, quiet.Claim(False, ("c1",))), 1.0, log, "long")
    time.sleep(0.5)  # the window is over: w asks for the machine back, long still runs
    late = _start(quiet.hold_claim(lock, quiet.Claim(False, ("c1",))), 0.1, log, "late")
    for t in (w, long, late):
        t.join()
    assert log == ["w+", "w~", "long+", "long-", "w=", "w-", "late+", "late-"]


def test_a_holding_counts_its_shared_seconds_and_labels_its_check(tmp_path: Path) -> None:
    lock = tmp_path / "q.lock"
    with quiet.hold_claim(lock, WAITS) as holding:
        assert holding.labels() == {"machine": "alone"}
        with holding.shared():
            time.sleep(0.2)
        labels = holding.labels()
    assert labels["machine"] == "alone" and float(labels["machine_shared_s"]) >= 0.2
    assert float(labels["machine_retake_s"]) < 0.2
    with quiet.hold_claim(lock, quiet.Claim(False, ("c1",))) as ordinary:
        with ordinary.shared():  # shared anyway: nothing changes
            pass
        assert ordinary.labels() == {"machine": "shared"}


def test_only_a_test_marked_waits_may_share_the_machine(tmp_path: Path) -> None:
    measuring = quiet.Claim(True, ("c1",), turn=True)
    with (
        quiet.hold_claim(tmp_path / "q.lock", measuring) as holding,
        pytest.raises(RuntimeError, match=r"mark\.waits"),
        holding.shared(),
    ):
        pass
    with quiet.Holding().shared():  # no quiet lock: nothing to share
        pass
    assert quiet.Holding().labels() == {}
