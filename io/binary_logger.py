"""binary:// loggers: the containerd convention for a program that receives a process's output.

The logger gets fd 3 = the read end of the stdout pipe, fd 4 = the read end of the stderr pipe,
fd 5 = the write end of a "ready" pipe, /dev/null on 0-2, and an environment of exactly
CONTAINER_ID and CONTAINER_NAMESPACE. It is ready when it writes a byte to fd 5, or (binary://
only, where old loggers just close fd 5) when fd 5 reaches EOF; binary-v2:// (containerd 2.3)
takes EOF without a byte as a failed start.
"""

import errno
import os
import signal
import urllib.parse

import trio

from .errors import StdioError
from .fds import FdSet
from .spawner import Spawner

READY_TIMEOUT = 30.0
"""Seconds a logger may take to signal ready: containerd bounds the whole Create by 30 s."""


def logger_argv(uri: str) -> list[str]:
    """argv for `binary:///path?k1=v1&k2=v2` (or binary-v2://): the path, then each key and its first value.

    As in containerd, the host part is ignored (`binary://usr/bin/x` runs /bin/x).
    """
    parts = urllib.parse.urlsplit(uri)
    if not parts.path.startswith("/"):
        raise StdioError(uri, f"{parts.scheme}:// needs an absolute path to the logging binary")
    argv = [parts.path]
    seen: set[str] = set()
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in seen:
            seen.add(key)
            argv += [key, value]
    return argv


class BinaryLogger:
    """One running logger process; `start` returns once it signalled ready.

    It holds a pidfd on the logger from spawn to the end of `stop`, and signals only through it: the
    reaper that owns the logger's exit (the shim's) may reap it at any checkpoint, and a signal sent
    by pid after that could hit whatever process got the pid next.
    """

    def __init__(self, uri: str, spawner: Spawner, pid: int, pidfd: int) -> None:
        self.uri = uri
        self.pid = pid
        self._spawner = spawner
        self._pidfd = pidfd

    @classmethod
    async def start(
        cls,
        uri: str,
        spawner: Spawner,
        fds: FdSet,
        *,
        stdout_read: int,
        stderr_read: int,
        env: dict[str, str],
    ) -> "BinaryLogger":
        """Spawn the logger on the given pipe read ends (closed here once it has them) and await ready."""
        argv = logger_argv(uri)
        if not os.access(argv[0], os.X_OK):
            reason = "is not executable" if os.path.exists(argv[0]) else "does not exist"
            raise StdioError(uri, f"logging binary {argv[0]} {reason}")
        ready_read, ready_write = fds.pipe()
        devnull = fds.adopt(os.open(os.devnull, os.O_RDWR))
        try:
            child_fds = {0: devnull, 1: devnull, 2: devnull, 3: stdout_read, 4: stderr_read, 5: ready_write}
            pid = spawner.spawn(argv, env, child_fds)
            # No checkpoint since spawn: a reaper in this trio thread cannot have reaped it yet, so the
            # pid is still the logger's (a zombie at worst, which pidfd_open accepts).
            pidfd = os.pidfd_open(pid)
        except OSError as error:
            raise StdioError(uri, f"cannot start logging binary: {error}") from error
        finally:
            for fd in (ready_write, devnull, stdout_read, stderr_read):
                fds.close(fd)
        logger = cls(uri, spawner, pid, pidfd)
        try:
            await logger._wait_ready(ready_read)
        except BaseException:
            with trio.CancelScope(shield=True):
                await logger.stop(timeout=0)
            raise
        finally:
            fds.close(ready_read)
        return logger

    async def _wait_ready(self, ready_read: int) -> None:
        os.set_blocking(ready_read, False)
        with trio.move_on_after(READY_TIMEOUT):
            while True:
                try:
                    signalled = os.read(ready_read, 1)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(ready_read)
                    continue
                if not signalled and self.uri.startswith("binary-v2:"):
                    raise StdioError(self.uri, "logging binary closed fd 5 without signalling ready")
                return
        raise StdioError(self.uri, f"logging binary did not signal ready within {READY_TIMEOUT:g}s")

    async def stop(self, timeout: float) -> None:
        """SIGTERM, up to `timeout` seconds for it to exit, then SIGKILL; returns once it was reaped.
        Call it once: it closes the pidfd."""
        exited = trio.Event()

        async def reap() -> None:
            await self._spawner.wait(self.pid)
            exited.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reap)
                self._signal(signal.SIGTERM)
                with trio.move_on_after(timeout):
                    await exited.wait()
                if not exited.is_set():
                    self._signal(signal.SIGKILL)
        finally:
            os.close(self._pidfd)

    def _signal(self, signum: int) -> None:
        """Signal the logger through its pidfd; one already reaped (ESRCH) needs nothing."""
        try:
            signal.pidfd_send_signal(self._pidfd, signum)
        except OSError as error:
            if error.errno != errno.ESRCH:
                raise
