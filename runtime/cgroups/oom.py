"""OOM notifications as a readable fd: v1 through an eventfd on memory.oom_control, v2 through
inotify on memory.events. Both count kills from the kernel's `oom_kill` counter, so a wake-up
that is not a kill (a cgroup being removed, another memory.events field changing) reads as 0."""

from __future__ import annotations

import ctypes
import os

from . import files
from .errors import CgroupError
from .interface import OomWatcher

_libc = ctypes.CDLL(None, use_errno=True)
_IN_MODIFY = 0x2
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


def oom_kills(path: str) -> int:
    """The kernel's OOM kill counter in memory.oom_control (v1) or memory.events (v2); 0 if the
    file is missing or has none."""
    return files.read_keyed(path).get("oom_kill", 0)


class EventfdOomWatcher(OomWatcher):
    """cgroup v1: register an eventfd with cgroup.event_control for memory.oom_control."""

    def __init__(self, memory_dir: str) -> None:
        self._control = f"{memory_dir}/memory.oom_control"
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            cfd = os.open(self._control, os.O_RDONLY | os.O_CLOEXEC)
            try:
                files.write(f"{memory_dir}/cgroup.event_control", f"{self._efd} {cfd}")
            finally:
                os.close(cfd)  # the kernel holds its own reference once registered
        except (OSError, CgroupError) as e:
            os.close(self._efd)
            raise CgroupError(f"cannot watch {self._control} for OOM: {e}") from e
        self._seen = oom_kills(self._control)

    def fileno(self) -> int:
        return self._efd

    def read(self) -> int:
        """The eventfd fires when an OOM *begins*, a moment before the kill is counted, so the
        counter is read on every call: callers may re-check after a wake-up that read 0."""
        try:
            events = os.eventfd_read(self._efd)
        except BlockingIOError:
            events = 0
        control = files.read_keyed(self._control)
        if not control:
            return 0  # the cgroup was removed: the kernel signals every registered eventfd
        if "oom_kill" not in control:
            return events  # kernels before 4.13 have no kill counter; every OOM event counts
        new, self._seen = max(control["oom_kill"] - self._seen, 0), control["oom_kill"]
        return new

    def close(self) -> None:
        if self._efd >= 0:
            os.close(self._efd)
            self._efd = -1


class InotifyOomWatcher(OomWatcher):
    """cgroup v2: the kernel raises IN_MODIFY on memory.events when any of its counters changes."""

    def __init__(self, cgroup_dir: str) -> None:
        self._events = f"{cgroup_dir}/memory.events"
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise CgroupError(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self._fd = fd
        if _libc.inotify_add_watch(fd, self._events.encode(), _IN_MODIFY) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise CgroupError(f"cannot watch {self._events} for OOM: {os.strerror(err)}")
        self._seen = oom_kills(self._events)

    def fileno(self) -> int:
        return self._fd

    def read(self) -> int:
        try:
            while os.read(self._fd, 4096):  # drain; the counter is what matters
                pass
        except BlockingIOError:
            pass
        kills = oom_kills(self._events)
        new, self._seen = max(kills - self._seen, 0), kills
        return new

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
