"""Cgroup.join: a freshly forked helper moves itself in (v1 through `tasks`, v2 through cgroup.procs)."""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from railcar.runtime.cgroups import Cgroup, CgroupError, open_cgroup, v2
from railcar.runtime.cgroups.v1 import CgroupV1

from .conftest import HYBRID, HYBRID_MOUNT, hierarchy_roots

pytestmark = pytest.mark.cgroup_v2  # runs on this v1 host and again on the pure v2 kernel


@contextmanager
def joined_child(cg: Cgroup, threads: int = 1) -> Iterator[tuple[int, dict[str, str]]]:
    """A forked child with `threads` threads that calls cg.join() and stays in the cgroup while
    the block runs; yields its pid and each thread's /proc/<tid>/cgroup."""
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(go_w)
            os.close(report_r)
            stop = threading.Event()
            extra = [threading.Thread(target=stop.wait) for _ in range(threads - 1)]
            for thread in extra:
                thread.start()
            cg.join()
            tasks = {tid: open(f"/proc/self/task/{tid}/cgroup").read() for tid in os.listdir("/proc/self/task")}
            os.write(report_w, json.dumps(tasks).encode())
            os.read(go_r, 1)  # stay in the cgroup until the parent has looked
            stop.set()
            for thread in extra:
                thread.join()
            code = 0
        finally:
            os._exit(code)
    os.close(report_w)
    os.close(go_r)
    try:
        yield pid, json.loads(os.read(report_r, 65536))
    finally:
        os.close(go_w)
        os.close(report_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    cg.destroy()


def test_join_moves_the_whole_calling_process_into_every_hierarchy(cgroup_parent: str) -> None:
    cg = open_cgroup(f"{cgroup_parent}/joined", "joined")
    cg.create(None)
    with joined_child(cg) as (pid, tasks):
        assert cg.pids() == [pid]  # cgroup.procs lists the process, not just a thread of it
    [membership] = tasks.values()
    paths = {}
    for line in membership.splitlines():
        _, controllers, path = line.split(":", 2)
        paths[controllers] = path
    if isinstance(cg, CgroupV1):
        joined = {c for c in paths if c and set(c.split(",")) & set(cg.mounts)}
        assert joined and {paths[c] for c in joined} == {cg.path}
    if HYBRID or not isinstance(cg, CgroupV1):   # a hybrid host's v2 tree too, as runc joins it (this VM's)
        assert paths[""] == cg.path


def test_an_exec_process_joins_every_hierarchy_through_the_files_opened_for_it(cgroup_parent: str) -> None:
    """open_tasks: the files an exec's helper opens on the host, which the exec process writes "0"
    to from inside the container's namespaces (the tasks files, and a hybrid host's cgroup.procs)."""
    cg = open_cgroup(f"{cgroup_parent}/exec", "exec")
    if not isinstance(cg, CgroupV1):
        pytest.skip("a v2 host moves an exec's process by its pid (CgroupV2.join)")
    cg.create(None)
    opened = cg.open_tasks()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for _, fd in opened:
            os.write(fd, b"0")
        os.write(w, open("/proc/self/cgroup", "rb").read())
        os._exit(0)
    for _, fd in opened:
        os.close(fd)
    os.close(w)
    membership = os.read(r, 65536).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    paths = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in membership.splitlines()}
    joined = {c for c in paths if c and set(c.split(",")) & set(cg.mounts)} | ({""} if HYBRID else set())
    assert "memory" in joined and {paths[c] for c in joined} == {cg.path}
    cg.destroy()
    assert not [root for root in hierarchy_roots() if os.path.exists(root + cg.path)]


@pytest.mark.skipif(not HYBRID, reason="needs a hybrid host: v1 controllers and a cgroup v2 tree (this test VM)")
def test_a_cgroup_made_before_railcar_joined_the_v2_tree_is_joined_without_it(cgroup_parent: str) -> None:
    """A container an older railcar created has no directory in a hybrid host's v2 tree: its execs
    join the v1 hierarchies all the same."""
    cg = open_cgroup(f"{cgroup_parent}/older", "older")
    assert isinstance(cg, CgroupV1)
    cg.create(None)
    os.rmdir(cg.mounts[""] + cg.path)
    assert cg.open_fork_target("exec helper") is None
    with joined_child(cg) as (pid, tasks):
        assert cg.pids() == [pid]
    [membership] = tasks.values()
    assert f"memory:{cg.path}\n" in membership and f"0::{cg.path}\n" not in membership


@pytest.mark.skipif(not HYBRID, reason="needs a hybrid host: v1 controllers and a cgroup v2 tree (this test VM)")
def test_a_hybrid_hosts_v2_tree_that_refuses_the_group_fails_nothing(cgroup_parent: str) -> None:
    """As runc ignores a failure to join that tree (it carries no limits): here its parent takes no
    more children (cgroup.max.descendants), and the container joins the v1 hierarchies all the same."""
    v2_parent = HYBRID_MOUNT + cgroup_parent
    os.makedirs(v2_parent)
    with open(f"{v2_parent}/cgroup.max.descendants", "w") as f:
        f.write("0")
    cg = open_cgroup(f"{cgroup_parent}/refused", "refused")
    assert isinstance(cg, CgroupV1)
    cg.create(None)
    assert cg.open_fork_target("init helper") is None and not os.path.exists(v2_parent + "/refused")
    with joined_child(cg) as (pid, tasks):
        assert cg.pids() == [pid]
    [membership] = tasks.values()
    assert f"memory:{cg.path}\n" in membership and f"0::{cg.path}\n" not in membership


def test_join_of_a_threaded_process_moves_every_thread(cgroup_parent: str) -> None:
    """`tasks` would move only the calling thread: a process with more threads must not leave
    one outside the cgroup."""
    cg = open_cgroup(f"{cgroup_parent}/threaded", "threaded")
    cg.create(None)
    with joined_child(cg, threads=2) as (_, tasks):
        assert len(tasks) == 2 and len(set(tasks.values())) == 1  # both threads, one membership


@pytest.mark.parametrize("init_cgroup", [None, "/pod", "/elsewhere/x", "/pod/c1x/y", "/pod/c1/init"])
def test_an_exec_refused_by_the_container_cgroup_joins_only_the_inits_inside_it(monkeypatch, tmp_path,
                                                                                init_cgroup) -> None:
    """The v2 fallback (the init moved into a child cgroup): only a cgroup inside the container's,
    never an ancestor, a sibling sharing its name's prefix, or none (runc joins wherever the init is)."""
    cg = v2.CgroupV2("/pod/c1", root=str(tmp_path))
    (tmp_path / "pod/c1/init").mkdir(parents=True)
    (tmp_path / "pod/c1/init/cgroup.procs").write_text("")

    def busy(pid: int) -> None:
        raise CgroupError("writing: Device or resource busy", errno.EBUSY)

    monkeypatch.setattr(cg, "add_process", busy)
    monkeypatch.setattr(v2.files, "v2_cgroup_of", lambda pid=0: init_cgroup)
    if init_cgroup == "/pod/c1/init":
        cg.join(init_pid=1234)
        assert (tmp_path / "pod/c1/init/cgroup.procs").read_text() == str(os.getpid())
    else:
        with pytest.raises(CgroupError) as refused:
            cg.join(init_pid=1234)
        assert refused.value.errno == errno.EBUSY


@pytest.mark.parametrize(("kernel", "controllers", "forked_into"), [
    ((6, 1), "cpuset cpu memory pids", False),   # the child would keep its parent's cpuset masks
    ((6, 1), "cpu memory pids", True),
    ((6, 4), "cpuset cpu memory pids", True),
])
def test_a_v2_cgroup_is_forked_into_unless_the_kernel_would_miss_its_cpuset(monkeypatch, tmp_path, kernel,
                                                                            controllers, forked_into) -> None:
    """Before Linux 6.4 a child forked into a cgroup kept its parent's CPUs and memory nodes: then
    the process is moved in (which applies them), whatever that costs."""
    cg = v2.CgroupV2("/pod/c1", root=str(tmp_path))
    (tmp_path / "pod/c1").mkdir(parents=True)
    (tmp_path / "pod/c1/cgroup.controllers").write_text(controllers + "\n")
    monkeypatch.setattr(v2, "_KERNEL", kernel)
    target = cg.open_fork_target("exec")
    if target is not None:
        os.close(target)
    assert (target is not None) == forked_into
    assert cg.open_fork_target("exec helper") is None

