"""PID 1 of a netns node: holds the node's namespaces and reaps orphans, as init does.

Run by ``nodeinit`` as ``podlab-init -I -S <this file> <lab>/<node>`` (the
standard library only, no site: it starts in milliseconds and never imports
podlab). In a PID namespace the kernel re-parents every orphan of the node to
PID 1, which must wait for them or they stay zombies until the node goes.
SIGCHLD is blocked and taken with ``sigwait``, so a child that dies between two
reaps is never missed. Inside the node, signals PID 1 has no handler for are
ignored by the kernel, and SIGINT (which Python would turn into an exception)
is ignored here: a ``kill 1`` in a node never takes the node down. ``down``
stops it with SIGKILL from the host, which ends every process of the node.
"""

import os
import signal


def main() -> None:
    """Reap children for ever."""
    try:
        with open("/proc/self/comm", "w") as comm:  # `ps` in the node shows "podlab-init"
            comm.write("podlab-init")
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        signal.sigwait({signal.SIGCHLD})


if __name__ == "__main__":
    main()
