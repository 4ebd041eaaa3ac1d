"""Fixtures for cgroup tests: a private absolute parent cgroup, processes placed in a cgroup
before they run, and a check that nothing is left behind."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from railcar.runtime.cgroups import ResourceError, host_version
from railcar.runtime.cgroups.interface import Cgroup, remove_tree
from railcar.runtime import mountinfo
from railcar.runtime.cgroups.v1 import HYBRID_MOUNT, v1_mounts

HOST_VERSION = host_version()
v1_only = pytest.mark.skipif(HOST_VERSION != 1, reason="needs a cgroup v1 host")
v2_only = pytest.mark.skipif(HOST_VERSION != 2, reason="needs a pure cgroup v2 host (run in the cgroup2 guest)")


# A hybrid host (this test VM): v1 controllers and systemd's cgroup v2 tree, which containers join too.
HYBRID = HOST_VERSION == 1 and any(m.fstype == "cgroup2" and m.point == HYBRID_MOUNT for m in mountinfo.read())


def hierarchy_roots() -> list[str]:
    return sorted(set(v1_mounts().values())) if HOST_VERSION == 1 else ["/sys/fs/cgroup"]


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """An absolute parent cgroup of this test's own; removed afterwards, and checked empty.

    Absolute because the test process lives inside the machine supervisor's cgroup, which a
    relative path would land in.
    """
    parent = f"/railcar-test-{uuid.uuid4().hex[:10]}"
    yield parent
    leftovers = []
    for root in hierarchy_roots():
        d = root + parent
        if not os.path.isdir(d):
            continue
        for sub, _dirs, _files in os.walk(d):
            if sub != d:
                leftovers.append(sub)
            for pid in open(f"{sub}/cgroup.procs").read().split():
                leftovers.append(f"{sub} pid {pid}")
                os.kill(int(pid), signal.SIGKILL)
        remove_tree(d)
    assert not leftovers, f"test left cgroups/processes behind: {leftovers}"


class Proc:
    """A process that is moved into a cgroup before it execs its command."""

    def __init__(self, cgroup: Cgroup, argv: list[str]) -> None:
        self.popen = subprocess.Popen(["/bin/sh", "-c", 'read go; exec "$@"', "sh", *argv],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.pid = self.popen.pid
        cgroup.add_process(self.pid)
        assert self.popen.stdin is not None
        self.popen.stdin.write(b"go\n")
        self.popen.stdin.close()

    def state(self) -> str:
        """The one-letter scheduler state from /proc/<pid>/stat (after the comm field)."""
        with open(f"/proc/{self.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]

    def wait(self) -> int:
        return self.popen.wait(timeout=30)


@pytest.fixture
def spawn() -> Iterator:
    procs: list[Proc] = []

    def _spawn(cgroup: Cgroup, *argv: str) -> Proc:
        procs.append(Proc(cgroup, list(argv)))
        return procs[-1]

    yield _spawn
    for p in procs:
        if p.popen.poll() is None:
            p.popen.kill()
        p.popen.wait()


PYTHON = shutil.which("python3") or "/usr/bin/python3"


def assert_refused(cg: Cgroup, resources: dict, path: str) -> None:
    """Creating ``cg`` with ``resources`` fails with a ResourceError naming the JSON ``path``."""
    with pytest.raises(ResourceError) as e:
        cg.create(resources)
    assert e.value.path == path
    cg.destroy()


def assert_oom_kill_is_notified(cg: Cgroup, spawn: Callable[..., Proc]) -> None:
    """A memory hog in ``cg`` (48 MiB, no swap beyond it) is OOM-killed; the watcher, silent before,
    wakes and counts the kill once."""
    cg.create({"memory": {"limit": 48 << 20, "swap": 48 << 20}})
    watcher = cg.oom_watcher()
    try:
        assert watcher.read() == 0  # nothing yet, and never blocks
        hog = spawn(cg, PYTHON, "-c", "x = []\nwhile True: x.append(bytearray(1 << 20))")
        assert hog.wait() == -signal.SIGKILL
        assert select.select([watcher], [], [], 20)[0] == [watcher]
        wait_for(lambda: watcher.read() >= 1, "the OOM kill to be counted")
        assert watcher.read() == 0
    finally:
        watcher.close()
    cg.destroy()


def assert_pids_limit_stops_fork_bomb(cg: Cgroup, spawn: Callable[..., Proc], pids_file: Callable[[str], str]) -> None:
    """A fork bomb in ``cg`` limited to 8 pids is refused forks (``pids_file(name)`` reads the driver's
    pids.* files) and never holds more than 8 processes."""
    cg.create({"pids": {"limit": 8}})
    bomb = spawn(cg, "/bin/sh", "-c", "for i in $(seq 30); do sleep 100 & done 2>/dev/null; wait")
    # pids.events counts forks the limit refused: wait for the first refusal.
    wait_for(lambda: pids_file("pids.events") != "max 0", "a refused fork")
    assert 1 < len(cg.pids()) <= 8
    assert int(pids_file("pids.current")) <= 8
    cg.kill_all(signal.SIGKILL)
    bomb.wait()
    cg.destroy()


@contextmanager
def idle_metrics(cg: Cgroup, message: type[Message], *parts: str) -> Iterator[Message]:
    """`cg` made without limits and its Stats as `message`, checked to have every one of `parts`
    (dotted for nested ones), empty as they are: containerd's cgroups library sends them, and
    readers (nerdctl stats) follow them without a nil check. `cg` is removed afterwards."""
    try:
        cg.create({})
        metrics = json_format.ParseDict(cg.stats(), message())
        for part in parts:
            *outer, inner = part.split(".")
            holder = metrics
            for name in outer:
                holder = getattr(holder, name)
            assert holder.HasField(inner), part
        yield metrics
    finally:
        cg.destroy()


def wait_for(condition: Callable[[], bool], what: str = "condition") -> None:
    """Poll for an asynchronous kernel-side effect; fails (not hangs) after 20 s."""
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
