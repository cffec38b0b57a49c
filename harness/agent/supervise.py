"""Pod process supervision: learn of an exit at once (pidfd), restart with back-off.

A kubelet learns that a container exited at once (the runtime's event, or its
PLEG relist within a second); the agent used to notice a dead pod process only
at its next full pass (``resync_s``, 10 s in a deployed lab), so a killed
backend stayed Ready — and in its Services — that long. Now each pod's main
process is watched through a **pidfd** (``os.pidfd_open``, Linux ≥ 5.3): one
thread polls them all, and an exit calls ``on_exit`` (the agent's loop wakes
and runs a quick pass: the pod leaves Ready — and every node's Services — and
is restarted per ``restartPolicy``, or reported Succeeded/Failed).

Why a pidfd, not SIGCHLD/waitpid or a poll of ``/proc``:

- pods outlive the agent (a restart or ``kill -9`` leaves them running), so
  after an agent restart they are not its children: ``waitpid`` and SIGCHLD see
  only children, and Python runs signal handlers in the main thread only;
- a pidfd names one process, never a recycled pid (``watch`` checks, after
  opening it, that the pid still lives in the pod's namespace);
- it costs nothing until the exit; a poll costs a ``/proc`` read per pod per
  period, and adds its period to every detection.

Where pidfds are missing (an old kernel) the thread falls back to looking at
each watched pid every 0.2 s, and says so once.

Restarts follow the kubelet's CrashLoopBackOff (``CrashLoop``: k8s.io/client-go
``flowcontrol.Backoff`` as ``kuberuntime_manager.doBackOff`` uses it): the
first exit restarts at once; after that each restart waits 10 s, doubling to
300 s; an exit more than 600 s after the last restart (the container ran
fine) restarts at once again and starts the back-off over.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.agent import procs

log = logging.getLogger("podlab.pods")
Key = tuple[str, str]
INITIAL_S = 10.0  # the kubelet's backOffPeriod
MAX_S = 300.0  # MaxContainerBackOff
POLL_S = 0.2  # the fallback's period where pidfds are missing


@dataclass
class _Entry:
    backoff_s: float
    last_restart: float


class CrashLoop:
    """Per pod: when its exited process may start again. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._due: dict[Key, float] = {}  # pods waiting to restart → when they may
        self._lock = threading.Lock()

    def _expired(self, entry: _Entry | None, now: float) -> bool:
        return entry is None or now - entry.last_restart > 2 * MAX_S

    def exited(self, key: Key) -> float:
        """The pod's process exited and will be restarted: seconds to wait (0: now)."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            wait = 0.0 if self._expired(entry, now) else entry.backoff_s  # type: ignore[union-attr]
            self._due[key] = now + wait
        return wait

    def remaining(self, key: Key) -> float:
        """Seconds until a waiting pod may restart (0: now, or not waiting)."""
        with self._lock:
            due = self._due.get(key)
        return 0.0 if due is None else max(0.0, due - self.clock())

    def waiting(self, key: Key) -> bool:
        with self._lock:
            return key in self._due

    def restarted(self, key: Key) -> None:
        """The pod's process was started again: the next exit waits longer."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            backoff = (
                INITIAL_S if self._expired(entry, now) else min(2 * entry.backoff_s, MAX_S)  # type: ignore[union-attr]
            )
            self._entries[key] = _Entry(backoff, now)
            self._due.pop(key, None)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._due.pop(key, None)


class ExitWatcher:
    """One thread that learns of pod process exits (see the module docstring).

    ``watch(pid)`` for every pod process the agent starts or finds running;
    ``take_exited()`` hands the pids that exited since the last call to the
    agent's pass; ``wake_in(s)`` calls ``on_exit`` again after ``s`` (a back-off
    ending). ``on_exit`` must be quick (it sets a flag and an event).
    """

    def __init__(self, on_exit: Callable[[], None] | None = None) -> None:
        self.on_exit = on_exit
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}  # pidfd → pid
        self._pids: dict[int, int] = {}  # pid → pidfd (-1: polled, no pidfd)
        self._exited: set[int] = set()
        self._wakes: list[float] = []
        self._poll = select.poll()
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll.register(self._pipe_r, select.POLLIN)
        self._pidfd = hasattr(os, "pidfd_open")
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, pid: int, netns_path: str | None = None) -> None:
        """Learn of ``pid``'s exit; ``netns_path``: it must live there (an adopted pid
        might have been recycled), else it counts as exited already."""
        with self._lock:
            if pid in self._pids or pid in self._exited or self._closed:
                return
        fd = -1
        if self._pidfd:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._exit(pid)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM):
                    raise
                self._pidfd = False
                log.warning("no pidfds here (%s): pod exits are polled every %.1f s", exc, POLL_S)
        if netns_path is not None and not procs.alive_in(pid, netns_path):
            if fd >= 0:
                os.close(fd)
            self._exit(pid)
            return
        with self._lock:
            self._pids[pid] = fd
            if fd >= 0:
                self._fds[fd] = pid
                self._poll.register(fd, select.POLLIN)
        self._start()
        self._nudge()

    def take_exited(self) -> set[int]:
        """The watched pids that exited since the last call."""
        with self._lock:
            out, self._exited = self._exited, set()
        return out

    def wake_in(self, seconds: float) -> None:
        """Call ``on_exit`` again in ``seconds`` (a pod's back-off ends then)."""
        with self._lock:
            self._wakes.append(time.monotonic() + seconds)
        self._start()
        self._nudge()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()
            self._pids.clear()
        self._nudge()

    # --- the thread -------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, daemon=True, name="pod-exits")
        self._thread.start()

    def _nudge(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._pipe_w, b"x")

    def _exit(self, pid: int) -> None:
        with self._lock:
            fd = self._pids.pop(pid, -1)
            if fd >= 0:
                self._fds.pop(fd, None)
                with contextlib.suppress(KeyError, ValueError):
                    self._poll.unregister(fd)
                os.close(fd)
            self._exited.add(pid)
        if self.on_exit is not None:
            self.on_exit()

    def _timeout_ms(self) -> int | None:
        with self._lock:
            polled = any(fd < 0 for fd in self._pids.values())
            wakes = list(self._wakes)
        waits = [max(0.0, t - time.monotonic()) for t in wakes] + ([POLL_S] if polled else [])
        return None if not waits else int(min(waits) * 1000) + 1

    def _run(self) -> None:
        while not self._closed:
            events = self._poll.poll(self._timeout_ms())
            for fd, _ in events:
                if fd == self._pipe_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._pipe_r, 4096)
                    continue
                with self._lock:
                    pid = self._fds.get(fd)
                if pid is not None:
                    self._exit(pid)
            with self._lock:
                polled = [pid for pid, fd in self._pids.items() if fd < 0]
                now = time.monotonic()
                due = [t for t in self._wakes if t <= now]
                self._wakes = [t for t in self._wakes if t > now]
            for pid in polled:
                if not procs.exists(pid):
                    self._exit(pid)
            if due and self.on_exit is not None:
                self.on_exit()
