"""The one cgroup interface the runtime and the shim use; the v1 and v2 drivers implement it."""

from __future__ import annotations

import abc
import errno
import os
import signal
import time
from typing import Callable

from . import files
from .errors import CgroupError

# How long freeze/destroy wait for the kernel to settle before giving up with an error.
SETTLE_TIMEOUT = 5.0


class OomWatcher(abc.ABC):
    """A readable fd that wakes on OOM events of one cgroup, for the shim's event loop.

    Import-free for trio users: `await trio.lowlevel.wait_readable(w.fileno())`, then `w.read()`.
    """

    @abc.abstractmethod
    def fileno(self) -> int: ...

    @abc.abstractmethod
    def read(self) -> int:
        """How many OOM kills happened since the last read (0 = spurious wake-up). Never blocks."""

    @abc.abstractmethod
    def close(self) -> None: ...


class Cgroup(abc.ABC):
    """One container's cgroup, identified by an absolute path valid in every hierarchy."""

    version: int

    def __init__(self, path: str) -> None:
        if not path.startswith("/") or path == "/":
            raise CgroupError(f"cgroup path must be absolute and not the root, got {path!r}")
        self.path = path
        self._checking = False  # in update's first pass: nothing is written
        self._undo: list[tuple[str, str]] | None = None  # in its second: what to write back if it fails

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    @abc.abstractmethod
    def create(self, resources: dict | None) -> None:
        """Make the cgroup (every needed directory) and apply OCI `linux.resources`."""

    @abc.abstractmethod
    def add_process(self, pid: int) -> None: ...

    def join(self, init_pid: int = 0, pid: int = 0) -> None:
        """Move process `pid` (0: the calling one) into the cgroup. Another process must be
        single-threaded (a freshly forked helper is): a driver may move just its thread, which is
        then the whole process. `init_pid`: an exec's, the container's init (see CgroupV2.join)."""
        self.add_process(pid or os.getpid())

    def open_fork_target(self, forked: str) -> int | None:
        """An fd of a cgroup v2 directory that `forked` is to be forked straight into
        (`syscalls.fork_into_cgroup`): a move after the fork takes the kernel's global migration
        lock for writing, and waits out an RCU grace period (~10 ms on the test VM). `forked` is
        "init helper" (an init's intermediate), "exec helper" (an exec's) or "exec" (an exec's
        process, which its intermediate forks). None: fork as usual, and `join`. The caller closes it."""
        return None

    @abc.abstractmethod
    def pids(self) -> list[int]:
        """Every process in the cgroup and its descendants."""

    def _pids_hierarchy(self, init_pid: int) -> tuple[str, str] | None:
        """(the hierarchy's root, the directory an exec's process would join in it) for the pids
        controller; None without one. `init_pid`: the container's init (see CgroupV2.join)."""
        return None

    def pids_limit_reached(self, init_pid: int = 0) -> str | None:
        """The pids.max that the cgroup an exec's process would join, or one of its ancestors (a
        pod's cgroup), is at, as "<file> <n>"; None if one more process fits. The kernel counts
        forks against pids.max, not a process moved in: an exec's process is one (on v1, and
        wherever it cannot be forked into the cgroup), and would take the container over its limit."""
        located = self._pids_hierarchy(init_pid)
        if located is None:
            return None
        root, directory = located
        while directory != root and directory.startswith(root + "/"):
            limit = (files.read_optional(f"{directory}/pids.max") or "max").strip()
            if limit != "max":
                current = (files.read_optional(f"{directory}/pids.current") or "0").strip()
                if int(current) >= int(limit):
                    return f"{directory}/pids.max {limit}"
            directory = os.path.dirname(directory)
        return None

    @abc.abstractmethod
    def freeze(self) -> None:
        """Freeze every process; returns once the kernel reports the cgroup frozen."""

    @abc.abstractmethod
    def thaw(self) -> None: ...

    @abc.abstractmethod
    def frozen(self) -> bool: ...

    def update(self, resources: dict) -> None:
        """Apply OCI LinuxResources JSON (as in a task Update request) to the existing cgroup.

        An Update that fails changes as little as it can, as runc's (which sets the previous
        resources back). A first pass only checks: the values, and that each file it would write can
        be opened. The second writes, noting each file's value before; if the kernel refuses a write
        on the way (a memory limit below what cannot be reclaimed), the one-value files written are
        put back, last first. Files that hold a list (per-device throttles and weights, v1's
        oom_control) or read empty (a fresh cpuset) are not, and neither is what a lower memory
        limit already reclaimed."""
        self._checking = True
        try:
            self._apply(resources)
        finally:
            self._checking = False
        self._undo = []
        try:
            self._apply(resources)
        except BaseException:
            for path, old in reversed(self._undo):
                try:
                    files.write(path, old)
                except CgroupError:
                    pass  # best effort: the error that stopped the update is the one to report
            raise
        finally:
            self._undo = None

    def _set(self, path: str, value: str | int) -> None:
        """How `_apply` writes a control file: while checking, only opens it."""
        if self._checking:
            files.check_writable(path, value)
            return
        self._keep(path)
        files.write(path, value)

    def _keep(self, path: str) -> None:
        """Note `path`'s value, to be put back if the update fails (also for a file the kernel changes
        as a side effect of another write, as cpu.idle resets the weight)."""
        if self._undo is not None:
            old = files.read_back(path)
            if old is not None:
                self._undo.append((path, old))

    @abc.abstractmethod
    def _apply(self, resources: dict) -> None:
        """One pass of `update`: every control file is written through `_set`."""

    @abc.abstractmethod
    def stats(self) -> dict:
        """Proto3-JSON dict of io.containerd.cgroups.v1.Metrics (v1) or .v2.Metrics (v2)."""

    @abc.abstractmethod
    def destroy(self) -> None:
        """Remove the cgroup and any children; idempotent; kills nothing (call kill_all first)."""

    @abc.abstractmethod
    def oom_watcher(self) -> OomWatcher: ...

    @abc.abstractmethod
    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in this cgroup (0 without a memory controller)."""

    def kill_all(self, sig: int) -> None:
        """Signal every process; frozen meanwhile (where a freezer exists) so a forking process
        cannot escape the sweep. A cgroup that is empty or already gone is not an error. A freeze
        that does not settle (a task stuck in I/O) does not stop the signals (as in runc): the
        sweep goes on unfrozen, and the cgroup is thawed again."""
        if not self.pids():
            return
        freeze = self._can_freeze() and not self.frozen()
        try:
            if freeze:
                try:
                    self.freeze()
                except CgroupError:
                    pass
            _signal_members(self.pids, sig)
        finally:
            if freeze or (sig == signal.SIGKILL and self.frozen()):
                self.thaw()  # a frozen task only dies once thawed

    def _can_freeze(self) -> bool:
        """Whether freeze() is possible here (a v1 host may lack the freezer hierarchy)."""
        return True

    def to_state(self) -> dict:
        """What the state file keeps so another process (e.g. `shim delete`) can reopen this cgroup."""
        return {"version": self.version, "path": self.path}

    @classmethod
    def from_state(cls, d: dict) -> Cgroup:
        """Reopen a cgroup saved by `to_state`, with the driver that created it."""
        from .v1 import CgroupV1  # the drivers import this module: resolve them at call time
        from .v2 import CgroupV2

        drivers: dict[int, type[Cgroup]] = {1: CgroupV1, 2: CgroupV2}
        try:
            driver = drivers[d["version"]]
            return driver(d["path"])
        except (KeyError, TypeError) as e:
            raise CgroupError(f"invalid saved cgroup state {d!r}") from e


_PIN_BATCH = 256
"""pidfds held at once while signalling, well below the usual 1024-fd soft limit."""


def _signal_members(list_pids: Callable[[], list[int]], sig: int) -> None:
    """Signal every process ``list_pids()`` names, never a process that merely reuses a pid.

    A listed process can exit, and its pid go to a process outside the cgroup, before we signal
    it. So each pid is pinned with a pidfd first and signalled only if it is still listed after
    pinning: then the pidfd names the member itself, and a later exit cannot redirect the signal.
    """
    pids = list_pids()
    for start in range(0, len(pids), _PIN_BATCH):
        pinned: dict[int, int] = {}
        try:
            for pid in pids[start:start + _PIN_BATCH]:
                try:
                    pinned[pid] = os.pidfd_open(pid)
                except ProcessLookupError:
                    pass
            members = set(list_pids())
            for pid, pidfd in pinned.items():
                if pid in members:
                    try:
                        signal.pidfd_send_signal(pidfd, sig)
                    except ProcessLookupError:
                        pass
        finally:
            for pidfd in pinned.values():
                os.close(pidfd)


def wait_until(done: Callable[[], bool], what: str, retry: Callable[[], None] | None = None) -> None:
    """Poll `done` (cgroup state changes are asynchronous); optionally re-kick with `retry`."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    delay = 0.0005
    while not done():
        if time.monotonic() > deadline:
            raise CgroupError(f"timed out after {SETTLE_TIMEOUT}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
        if retry is not None:
            retry()


def remove_tree(root: str) -> None:
    """rmdir `root` and its children, deepest first, retrying while exiting tasks still pin them."""
    if not os.path.isdir(root):
        return

    def attempt() -> bool:
        for d in files.walk_dirs(root):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno == errno.EBUSY:  # a task is still leaving
                    return False
                raise CgroupError(f"removing cgroup {d}: {e.strerror}") from e
        return True

    wait_until(attempt, f"cgroup {root} to become empty so it can be removed")
