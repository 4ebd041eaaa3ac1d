"""Cgroup.join: a freshly forked helper moves itself in (v1 through `tasks`, v2 through cgroup.procs)."""

from __future__ import annotations

import os
import threading

import pytest

from railcar.runtime.cgroups import open_cgroup
from railcar.runtime.cgroups.v1 import CgroupV1

pytestmark = pytest.mark.cgroup_v2  # runs on this v1 host and again on the pure v2 kernel


def test_join_moves_the_whole_calling_process_into_every_hierarchy(cgroup_parent: str) -> None:
    cg = open_cgroup(f"{cgroup_parent}/joined", "joined")
    cg.create(None)
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(go_w)
            os.close(report_r)
            cg.join()
            with open("/proc/self/cgroup") as f:
                os.write(report_w, f.read().encode())
            os.read(go_r, 1)  # stay in the cgroup until the parent has looked
            code = 0
        finally:
            os._exit(code)
    os.close(report_w)
    os.close(go_r)
    try:
        membership = os.read(report_r, 65536).decode()
        assert cg.pids() == [pid]  # cgroup.procs lists the process, not just a thread of it
    finally:
        os.close(go_w)
        os.close(report_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    paths = {}
    for line in membership.splitlines():
        _, controllers, path = line.split(":", 2)
        paths[controllers] = path
    if isinstance(cg, CgroupV1):
        joined = {c for c in paths if c and set(c.split(",")) & set(cg.mounts)}
        assert joined and {paths[c] for c in joined} == {cg.path}
    else:
        assert paths[""] == cg.path
    cg.destroy()


def test_join_of_a_threaded_process_moves_every_thread(cgroup_parent: str) -> None:
    """`tasks` would move only the calling thread: a process with more threads must not leave
    one outside the cgroup."""
    cg = open_cgroup(f"{cgroup_parent}/threaded", "threaded")
    cg.create(None)
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(report_r)
            stop = threading.Event()
            thread = threading.Thread(target=stop.wait)
            thread.start()
            cg.join()
            tids = os.listdir("/proc/self/task")
            paths = {open(f"/proc/self/task/{tid}/cgroup").read() for tid in tids}
            os.write(report_w, f"{len(tids)} {len(paths)}".encode())
            stop.set()
            thread.join()
            code = 0
        finally:
            os._exit(code)
    os.close(report_w)
    threads, distinct = os.read(report_r, 100).decode().split()
    os.close(report_r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (threads, distinct) == ("2", "1")  # both threads, one membership
    cg.destroy()
