"""The shim outlives containerd restarts, and containerd cleans up after a killed shim."""

import os
import signal
import time

import pytest

from railcar.shim import pool

from .conftest import RUNTIME, eventually, remove_task, shim_pids, task_status

pytestmark = [pytest.mark.integration, pytest.mark.cgroup_v2]  # run again in the pure v2 guest


def _shim_of(cd, cid: str) -> int:
    """The daemon serving `cid`, from the shim.pid it wrote into the bundle."""
    pid = int((cd.bundle(cid) / "shim.pid").read_text())
    assert pid in shim_pids()
    return pid


def test_containerd_restart_keeps_the_container_running(cd, image, cid) -> None:
    assert cd.ctr("run", "-d", "--runtime", RUNTIME, image, cid, "sleep", "1000").returncode == 0
    exited = cid + "-x"
    assert cd.ctr("run", "-d", "--runtime", RUNTIME, image, exited, "sh", "-c", "sleep 1; exit 4").returncode == 0
    try:
        shim = _shim_of(cd, cid)
        cd.stop()
        time.sleep(1.5)  # the second container exits while containerd is down
        cd.start()
        assert _shim_of(cd, cid) == shim
        assert task_status(cd, cid) == "RUNNING"
        assert eventually(lambda: task_status(cd, exited) == "STOPPED")
        result = cd.ctr("task", "exec", "--exec-id", "after", cid, "echo", "still here")
        assert (result.returncode, result.stdout) == (0, b"still here\n")
        assert cd.ctr("task", "kill", "-s", "SIGKILL", cid).returncode == 0
        assert eventually(lambda: task_status(cd, cid) == "STOPPED")
    finally:
        remove_task(cd, cid)
        remove_task(cd, exited)


def test_killed_shim_is_cleaned_up_by_containerd(cd, image, cid) -> None:
    assert cd.ctr("run", "-d", "--runtime", RUNTIME, image, cid, "sleep", "1000").returncode == 0
    try:
        shim = _shim_of(cd, cid)
        container_pid = int(cd.ctr("task", "ls").stdout.decode().split(cid)[1].split()[0])
        os.kill(shim, signal.SIGKILL)
        assert eventually(lambda: task_status(cd, cid) in ("", "STOPPED"))
        assert eventually(lambda: not os.path.exists(f"/proc/{container_pid}"))
    finally:
        remove_task(cd, cid)


def test_a_pod_shares_one_shim_and_each_delete_touches_only_its_container(cd, image, cid) -> None:
    pod = ("--annotation", f"io.kubernetes.cri.sandbox-id={cid}")
    first, second = cid, cid + "-b"
    for container in (first, second):
        result = cd.ctr("run", "-d", "--runtime", RUNTIME, *pod, image, container, "sleep", "1000")
        assert result.returncode == 0, result.stderr
    try:
        shim = _shim_of(cd, first)
        assert _shim_of(cd, second) == shim
        assert (cd.bundle(first) / "address").read_text() == (cd.bundle(second) / "address").read_text()
        remove_task(cd, first)
        assert task_status(cd, second) == "RUNNING" and shim in shim_pids()
        result = cd.ctr("task", "exec", "--exec-id", "e", second, "echo", "alone")
        assert (result.returncode, result.stdout) == (0, b"alone\n")
    finally:
        remove_task(cd, first)
        remove_task(cd, second)


def test_containers_without_a_group_share_a_pooled_daemon(cd, image, cid) -> None:
    first, second, own = cid, cid + "-b", cid + "-own"
    for container, flags in ((first, ()), (second, ()),
                             (own, ("--annotation", f"io.containerd.railcar.v2.group={cid}-own"))):
        result = cd.ctr("run", "-d", "--runtime", RUNTIME, *flags, image, container, "sleep", "1000")
        assert result.returncode == 0, result.stderr
    try:
        shim = _shim_of(cd, first)
        assert _shim_of(cd, second) == shim and _shim_of(cd, own) != shim  # a group of its own opts out
        address = (cd.bundle(first) / "address").read_text()
        members = pool.Members(address.removeprefix("unix://"))
        assert sorted(members.names()) == [first, second]
        remove_task(cd, first)
        assert members.names() == [second]
        assert task_status(cd, second) == "RUNNING" and shim in shim_pids()
        result = cd.ctr("task", "exec", "--exec-id", "e", second, "echo", "alone")
        assert (result.returncode, result.stdout) == (0, b"alone\n")
        remove_task(cd, second)
        assert eventually(lambda: shim not in shim_pids())
        assert not os.path.exists(members.dir) and not os.path.exists(members.socket_path)
    finally:
        for container in (first, second, own):
            remove_task(cd, container)


def test_a_killed_pooled_daemon_is_cleaned_up_for_every_member(cd, image, cid) -> None:
    members_ids = [cid, cid + "-b"]
    for container in members_ids:
        assert cd.ctr("run", "-d", "--runtime", RUNTIME, image, container, "sleep", "1000").returncode == 0
    try:
        shim = _shim_of(cd, cid)
        assert _shim_of(cd, members_ids[1]) == shim
        members = pool.Members((cd.bundle(cid) / "address").read_text().removeprefix("unix://"))
        lines = cd.ctr("task", "ls").stdout.decode().splitlines()[1:]
        listed = {fields[0]: int(fields[1]) for fields in map(str.split, lines)}
        inits = [listed[c] for c in members_ids]
        os.kill(shim, signal.SIGKILL)
        for container, init in zip(members_ids, inits):
            assert eventually(lambda: task_status(cd, container) in ("", "STOPPED"))
            assert eventually(lambda: not os.path.exists(f"/proc/{init}"))
        # containerd ran `delete` for each: the last one removed the dead daemon's pool
        assert eventually(lambda: not members.exists() and not os.path.exists(members.socket_path))
    finally:
        for container in members_ids:
            remove_task(cd, container)
