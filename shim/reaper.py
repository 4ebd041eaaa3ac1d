"""The one reaper: every child exit goes through here, routed by pid.

The daemon is a child subreaper, so container inits, their orphans and logger processes all end up
as its children. Exactly one place may call waitpid, or two paths steal each other's statuses
(reference §8.7). An exit that arrives before anyone asks for it is kept until someone does.
"""

import os
import signal

import trio

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

    def adopt(self, pid: int) -> None:
        """`pid` is a new process of ours (a container's init or exec, a logger): forget an exit kept
        for that number while the process is still there, alive or not yet reaped. That exit was
        an earlier process's: an orphan nobody waited for (from a container in the host's pid
        namespace, say), whose number the kernel has given again. Were it kept, the new process
        would be reported exited at once. A new process that has already been reaped left no
        /proc entry, and then the exit kept is its own: the latest for that number."""
        if pid in self._exited and os.path.exists(f"/proc/{pid}"):
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
