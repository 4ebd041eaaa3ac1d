"""How railcar.io starts a binary:// logger, and a default way to do it outside the shim."""

import fcntl
import os
import signal
from typing import Protocol

import trio


class Spawner(Protocol):
    """Starts a program with given fds and waits for it.

    The shim passes its own implementation because it reaps every child with one waitpid(-1) loop;
    a second waiter would steal exit statuses. So railcar.io never waits for a child itself when a
    spawner is given, and calls `wait` exactly once per pid.
    """

    def spawn(self, argv: list[str], env: dict[str, str], fds: dict[int, int]) -> int:
        """Start argv[0] with exactly `env`; `fds` maps each child fd to one of our fds. Returns the pid.

        The caller closes its own copies of the fds as soon as this returns.
        """
        ...

    async def wait(self, pid: int) -> int:
        """The exit code of `pid` once it exited (negative signal number if killed)."""
        ...


def spawn_with_fds(argv: list[str], env: dict[str, str], fds: dict[int, int]) -> int:
    """posix_spawn argv[0] with exactly `env` and `fds` (child fd -> our fd); every other fd of
    ours is close-on-exec already (Python's default). Returns the pid; nobody waits for it here.

    No Python code runs in the child, so this is safe inside a trio loop and with threads.
    """
    # Move every source fd above the highest target first, so no dup2 below can overwrite a
    # source that a later dup2 still needs. The high copies are close-on-exec.
    floor = max(fds, default=2) + 1
    high = {child: fcntl.fcntl(ours, fcntl.F_DUPFD_CLOEXEC, floor) for child, ours in fds.items()}
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, child) for child, fd in high.items()],
            # Python ignores SIGPIPE and SIGXFSZ; the child must not inherit that (a logger past
            # RLIMIT_FSIZE would get EFBIG instead of its signal, as subprocess's restore_signals knows)
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            setsigmask=(),
        )
    finally:
        for fd in high.values():
            os.close(fd)


class DefaultSpawner:
    """spawn_with_fds + a pidfd per child: for standalone use and tests, where nobody else reaps.

    The pidfd is opened while the child is still our unreaped child, so it can never refer to a
    recycled pid, and waiting on it is a plain trio readability wait (no thread, cancellable).
    """

    def __init__(self) -> None:
        self._pidfds: dict[int, int] = {}

    def spawn(self, argv: list[str], env: dict[str, str], fds: dict[int, int]) -> int:
        pid = spawn_with_fds(argv, env, fds)
        self._pidfds[pid] = os.pidfd_open(pid)
        return pid

    async def wait(self, pid: int) -> int:
        pidfd = self._pidfds[pid]
        await trio.lowlevel.wait_readable(pidfd)
        del self._pidfds[pid]
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
