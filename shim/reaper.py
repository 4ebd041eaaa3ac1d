"""The one reaper: every child exit goes through here, routed by pid.

The daemon is a child subreaper, so container inits, their orphans and logger processes all end up
as its children. Exactly one place may call waitpid, or two paths steal each other's statuses
(reference §8.7). An exit that arrives before anyone asks for it is kept until someone does.
"""

import os
import signal

import trio

from railcar.runtime.state import start_time

_KEEP_UNCLAIMED = 4096


def exit_status(wait_status: int) -> int:
    """containerd's convention: the exit code, or 128 + signal number when killed by a signal."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


class Reaper:
    """Collects child exits on SIGCHLD and hands each to the task waiting for that pid."""

    def __init__(self) -> None:
        self._exited: dict[int, int] = {}
        self._waiters: dict[int, trio.Event] = {}

    def reap(self) -> None:
        """Collect every exit available now; never blocks."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._exited[pid] = status
            waiter = self._waiters.pop(pid, None)
            if waiter is not None:
                waiter.set()
            elif len(self._exited) > _KEEP_UNCLAIMED:
                # Orphans nobody tracks (e.g. from a container without a pid namespace) must not grow forever.
                self._exited.pop(next(iter(self._exited)))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reap on every SIGCHLD until cancelled; started once the signal handler is in place."""
        with trio.open_signal_receiver(signal.SIGCHLD) as signals:
            self.reap()
            task_status.started()
            async for _ in signals:
                self.reap()

    def adopt(self, pid: int, started: int | None) -> None:
        """`pid` is a new process of ours (a container's init or exec, a logger) that started at
        `started` (state.start_time; None: it had been reaped already when that was read): forget
        an exit kept for that number if it is an earlier process's. An orphan nobody waited for
        (from a container in the host's pid namespace, say) leaves its exit here, and the kernel
        may give its number again; were it kept, the new process would be reported exited at once.
        The exit kept is an earlier one only while the new process is still there, alive or a
        zombie; otherwise it is the new process's own, the latest for that number, even if a
        stranger has the number by now."""
        if pid in self._exited and started is not None and start_time(pid, zombie=True) == started:
            del self._exited[pid]

    def has_exited(self, pid: int) -> bool:
        """Whether `pid` was reaped and its status not yet claimed (so signalling it would hit a stranger)."""
        return pid in self._exited

    async def wait(self, pid: int) -> int:
        """The raw wait status of child `pid`, waiting for it if needed. Each exit is claimed once."""
        while pid not in self._exited:
            event = self._waiters.setdefault(pid, trio.Event())
            await event.wait()
        return self._exited.pop(pid)
