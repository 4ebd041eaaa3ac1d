"""The v1 driver against the host's real v1 hierarchies, with plain processes."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from google.protobuf import json_format

from railcar.runtime.cgroups import Cgroup, CgroupError, CgroupV1, ResourceError, open_cgroup
from railcar.runtime.cgroups.stats_v1 import device_names
from railcar.ttrpc_proto.api import cgroups_v1_pb2

from .conftest import (PYTHON, assert_oom_kill_is_notified, assert_pids_limit_stops_fork_bomb, assert_refused,
                       idle_metrics, v1_only, wait_for)

pytestmark = v1_only


def read(cg: CgroupV1, controller: str, name: str) -> str:
    d = cg.dir(controller)
    assert d is not None
    with open(f"{d}/{name}") as f:
        return f.read().strip()


def test_create_applies_resources_everywhere(cgroup_parent: str) -> None:
    cg = CgroupV1(f"{cgroup_parent}/c1")
    cg.create({
        "memory": {"limit": 64 << 20, "swap": 64 << 20, "reservation": 32 << 20, "swappiness": 10,
                   "kernel": 32 << 20, "kernelTCP": 8 << 20, "disableOOMKiller": True},
        "cpu": {"shares": 512, "quota": 20000, "period": 100000, "burst": 5000},
        "pids": {"limit": 42},
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                          "access": "rw"}],
    })
    for mount in set(cg.mounts.values()):
        assert os.path.isdir(mount + cg.path)
    assert read(cg, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert read(cg, "memory", "memory.memsw.limit_in_bytes") == str(64 << 20)
    assert read(cg, "memory", "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(cg, "memory", "memory.swappiness") == "10"
    assert read(cg, "memory", "memory.kmem.tcp.limit_in_bytes") == str(8 << 20)
    assert "oom_kill_disable 1" in read(cg, "memory", "memory.oom_control")
    assert read(cg, "cpu", "cpu.shares") == "512"
    assert read(cg, "cpu", "cpu.cfs_quota_us") == "20000"
    assert read(cg, "cpu", "cpu.cfs_burst_us") == "5000"
    cg.update({"cpu": {"idle": 1}})   # (an idle group's shares read as the kernel's minimum)
    assert read(cg, "cpu", "cpu.idle") == "1"
    cg.update({"cpu": {"shares": 512, "idle": 1}})   # CRI resends the whole resources: no refusal
    cg.update({"cpu": {"idle": 0, "burst": 0, "shares": 256}})   # zeros are values here, not "leave it"
    assert (read(cg, "cpu", "cpu.cfs_burst_us"), read(cg, "cpu", "cpu.idle"), read(cg, "cpu", "cpu.shares")) == \
        ("0", "0", "256")
    cg.update({"cpu": {"quota": 50000, "burst": 40000}})
    cg.update({"cpu": {"quota": 20000, "burst": 10000}})   # each is checked against the other's current value
    assert (read(cg, "cpu", "cpu.cfs_quota_us"), read(cg, "cpu", "cpu.cfs_burst_us")) == ("20000", "10000")
    assert read(cg, "pids", "pids.max") == "42"
    assert read(cg, "devices", "devices.list") == "c 1:3 rw"
    if "cpuset" in cg.mounts:
        assert read(cg, "cpuset", "cpuset.cpus") != ""
    cg.destroy()
    assert not any(os.path.exists(m + cg.path) for m in cg.mounts.values())
    cg.destroy()  # idempotent


def test_update_raises_and_lowers_memory_with_swap(cgroup_parent: str) -> None:
    cg = CgroupV1(f"{cgroup_parent}/c2")
    cg.create({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    cg.update({"memory": {"limit": 128 << 20, "swap": 256 << 20}})  # memsw must move first
    assert read(cg, "memory", "memory.limit_in_bytes") == str(128 << 20)
    cg.update({"memory": {"limit": 16 << 20, "swap": 16 << 20}})  # memory must move first
    assert read(cg, "memory", "memory.memsw.limit_in_bytes") == str(16 << 20)
    cg.update({"memory": {"limit": -1, "swap": -1}, "pids": {"limit": -1}})
    assert read(cg, "pids", "pids.max") == "max"
    cg.destroy()


def test_a_refused_update_changes_nothing(cgroup_parent: str) -> None:
    cg = CgroupV1(f"{cgroup_parent}/c9")
    cg.create({"memory": {"limit": 64 << 20}, "pids": {"limit": 42}})
    try:
        # Refused after the memory and pids sections: no CFQ scheduler on current kernels (or a bad type).
        for refused, path in (({"blockIO": {"leafWeight": 500}}, "blockIO.leafWeight"),
                              ({"network": {"classID": "x"}}, "network.classID")):
            with pytest.raises(ResourceError) as e:
                cg.update({"memory": {"limit": 32 << 20}, "pids": {"limit": 7}, **refused})
            assert e.value.path == f"linux.resources.{path}"
            assert read(cg, "memory", "memory.limit_in_bytes") == str(64 << 20)
            assert read(cg, "pids", "pids.max") == "42"
        # Refused by the kernel half-way (no such device): what it wrote before is put back, as runc does.
        with pytest.raises(CgroupError, match="throttle"):
            cg.update({"memory": {"limit": 32 << 20}, "cpu": {"quota": 20000, "period": 100000},
                       "blockIO": {"throttleReadBpsDevice": [{"major": 4095, "minor": 4095, "rate": 1}]}})
        assert read(cg, "memory", "memory.limit_in_bytes") == str(64 << 20)
        assert read(cg, "cpu", "cpu.cfs_quota_us") == "-1"
        # Putting idle back resets the shares in the kernel: they are put back after it.
        cg.update({"cpu": {"shares": 512}})
        with pytest.raises(CgroupError, match="throttle"):
            cg.update({"cpu": {"idle": 1},
                       "blockIO": {"throttleReadBpsDevice": [{"major": 4095, "minor": 4095, "rate": 1}]}})
        assert (read(cg, "cpu", "cpu.idle"), read(cg, "cpu", "cpu.shares")) == ("0", "512")
    finally:
        cg.destroy()


def test_unlimited_memory_lifts_the_memory_and_swap_limit(cgroup_parent: str) -> None:
    """As runc: memory+swap may not stay below an unlimited memory (it would refuse the memory)."""
    cg = CgroupV1(f"{cgroup_parent}/c10")
    cg.create({"memory": {"limit": 64 << 20, "swap": 64 << 20}})
    try:
        cg.update({"memory": {"limit": -1}})
        unlimited = read(cg, "memory", "memory.limit_in_bytes")
        assert int(unlimited) > 1 << 60 and read(cg, "memory", "memory.memsw.limit_in_bytes") == unlimited
    finally:
        cg.destroy()


@pytest.mark.parametrize(("resources", "path"), [
    ({"memory": {"limit": "1G"}}, "linux.resources.memory.limit"),
    ({"memory": {"limit": 100, "swap": 50}}, "linux.resources.memory.swap"),
    ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness"),
    ({"cpu": {"shares": 262145}}, "linux.resources.cpu.shares"),  # the kernel would clamp it silently
    ({"devices": [{"allow": True, "access": "x"}]}, "linux.resources.devices[0].access"),
    ({"devices": [{"access": "r"}]}, "linux.resources.devices[0].allow"),
    ({"unified": {"memory.high": "1"}}, "linux.resources.unified"),
    # not implemented: refused, never ignored
    ({"rdma": {"mlx5_0": {"hcaHandles": 3}}}, "linux.resources.rdma"),
    ({"cpu": {"idle": 2}}, "linux.resources.cpu.idle"),
    ({"cpu": {"burst": -1}}, "linux.resources.cpu.burst"),
    ({"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]}, "linux.resources.hugepageLimits[0].pageSize"),
])
def test_bad_resources_name_the_json_path(cgroup_parent: str, resources: dict, path: str) -> None:
    assert_refused(CgroupV1(f"{cgroup_parent}/bad"), resources, path)


def test_processes_freeze_thaw_kill(cgroup_parent: str, spawn) -> None:
    cg = CgroupV1(f"{cgroup_parent}/c3")
    cg.create(None)
    a = spawn(cg, "sleep", "1000")
    b = spawn(cg, "sleep", "1000")
    assert cg.pids() == sorted([a.pid, b.pid])
    cg.freeze()
    assert cg.frozen()
    assert a.state() == "D"  # v1 frozen tasks sleep uninterruptibly in the freezer
    cg.thaw()
    assert not cg.frozen()
    wait_for(lambda: a.state() == "S", "the thawed process to sleep again (not frozen)")
    cg.kill_all(signal.SIGKILL)
    assert a.wait() == -signal.SIGKILL and b.wait() == -signal.SIGKILL
    assert cg.pids() == []
    cg.destroy()


def test_state_round_trip(cgroup_parent: str) -> None:
    cg = open_cgroup(f"{cgroup_parent}/c4", "c4")
    assert isinstance(cg, CgroupV1)
    again = Cgroup.from_state(cg.to_state())
    assert isinstance(again, CgroupV1) and again.path == cg.path
    with pytest.raises(CgroupError, match="invalid saved cgroup state"):
        Cgroup.from_state({"version": 3, "path": cg.path})


def test_stats_parse_as_metrics_and_count_usage(cgroup_parent: str, spawn) -> None:
    cg = CgroupV1(f"{cgroup_parent}/c5")
    cg.create({"pids": {"limit": 10}, "memory": {"limit": 256 << 20}})
    p = spawn(cg, PYTHON, "-c", "x = bytearray(40 << 20); x[::4096] = b'1' * len(x[::4096]); "
                                "sum(range(3_000_000)); import time; time.sleep(1000)")
    # wait until the process has touched its memory
    wait_for(lambda: cg.stats()["memory"]["usage"]["usage"] > 40 << 20)
    stats = cg.stats()
    metrics = json_format.ParseDict(stats, cgroups_v1_pb2.Metrics())
    assert metrics.pids.current == 1 and metrics.pids.limit == 10
    assert metrics.memory.usage.usage > 40 << 20
    assert metrics.memory.usage.limit == 256 << 20
    assert metrics.memory.rss + metrics.memory.cache > 0
    assert metrics.cpu.usage.total > 0 and len(metrics.cpu.usage.per_cpu) == os.cpu_count()
    p.popen.kill()
    p.wait()
    cg.destroy()


def test_blkio_entries_name_their_device_as_containerd_does(cgroup_parent: str, spawn, tmp_path) -> None:
    data = tmp_path / "data"
    with open(data, "wb") as f:
        f.write(b"x" * 4 * 4096)
        os.fsync(f.fileno())
    number = (os.major(data.stat().st_dev), os.minor(data.stat().st_dev))
    device = device_names(open("/proc/partitions").read()).get(number)
    if device is None:
        pytest.skip(f"{tmp_path} is not on a block device /proc/partitions lists")
    cg = CgroupV1(f"{cgroup_parent}/c9")
    # A limit far above the reads: recent kernels (6.18 here) set the throttle layer up on a disk
    # only once a limit names it, and until then the v1 throttle files count nothing there.
    cg.create({"blockIO": {"throttleReadBpsDevice": [{"major": number[0], "minor": number[1], "rate": 1 << 40}]}})
    try:
        # O_DIRECT reads get past the page cache to the device, so the throttle layer counts them.
        assert spawn(cg, "dd", f"if={data}", "of=/dev/null", "bs=4096", "iflag=direct").wait() == 0
        metrics = json_format.ParseDict(cg.stats(), cgroups_v1_pb2.Metrics())
    finally:
        cg.destroy()
    [read] = [e for e in metrics.blkio.io_service_bytes_recursive if ((e.major, e.minor), e.op) == (number, "Read")]
    assert read.device == device and read.value >= 4 * 4096


def test_device_names_come_from_proc_partitions_first_name_winning() -> None:
    assert device_names("major minor  #blocks  name\n\n 254        0  268435456 vda\n"
                        "   7        0       1024 loop0\n 254        0  1 again\n") == \
        {(254, 0): "/dev/vda", (7, 0): "/dev/loop0"}


def test_an_idle_cgroup_has_every_part_of_its_metrics(cgroup_parent: str) -> None:
    with idle_metrics(CgroupV1(f"{cgroup_parent}/c7"), cgroups_v1_pb2.Metrics, "pids", "cpu", "memory", "blkio",
                      "memory_oom_control", "cpu.usage", "cpu.throttling", "memory.usage", "memory.swap",
                      "memory.kernel", "memory.kernel_tcp"):
        pass


def test_oom_kill_is_notified(cgroup_parent: str, spawn) -> None:
    assert_oom_kill_is_notified(CgroupV1(f"{cgroup_parent}/c6"), spawn)


def test_pids_limit_stops_fork_bomb(cgroup_parent: str, spawn) -> None:
    cg = CgroupV1(f"{cgroup_parent}/c7")
    assert_pids_limit_stops_fork_bomb(cg, spawn, lambda name: read(cg, "pids", name))


def test_kill_all_reaches_a_paused_cgroup_and_ignores_a_gone_one(cgroup_parent: str, spawn) -> None:
    cg = CgroupV1(f"{cgroup_parent}/c8")
    cg.create(None)
    a = spawn(cg, "sleep", "1000")
    b = spawn(cg, "sleep", "1000")
    cg.kill_all(signal.SIGTERM)
    assert a.wait() == -signal.SIGTERM and b.wait() == -signal.SIGTERM
    c = spawn(cg, "sleep", "1000")
    cg.freeze()
    cg.kill_all(signal.SIGKILL)
    assert c.wait() == -signal.SIGKILL
    assert not cg.frozen()
    cg.destroy()
    cg.kill_all(signal.SIGKILL)
    assert cg.pids() == []


def test_block_io_throttles_and_unsupported_weight(cgroup_parent: str) -> None:
    cg = CgroupV1(f"{cgroup_parent}/c9")
    cg.create({"blockIO": {"throttleReadBpsDevice": [{"major": 7, "minor": 0, "rate": 1 << 20}],
                           "throttleWriteIOPSDevice": [{"major": 7, "minor": 0, "rate": 100}]}})
    assert read(cg, "blkio", "blkio.throttle.read_bps_device") == f"7:0 {1 << 20}"
    assert read(cg, "blkio", "blkio.throttle.write_iops_device") == "7:0 100"
    d = cg.dir("blkio")
    if not os.path.exists(f"{d}/blkio.weight") and not os.path.exists(f"{d}/blkio.bfq.weight"):
        with pytest.raises(ResourceError, match="no I/O scheduler with weights"):
            cg.update({"blockIO": {"weight": 500}})
    cg.destroy()


def test_hugepage_limits(cgroup_parent: str) -> None:
    cg = CgroupV1(f"{cgroup_parent}/c10")
    cg.create({"hugepageLimits": [{"pageSize": "64KB", "limit": 0}]})  # no such size here: nothing to limit
    two_mb = {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 21}]}
    if not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("no 2MB huge pages on this kernel")
    if "hugetlb" in cg.mounts:
        cg.update(two_mb)
        assert read(cg, "hugetlb", "hugetlb.2MB.limit_in_bytes") == str(4 << 21)
    else:
        with pytest.raises(CgroupError, match="hugetlb controller, which is not mounted"):
            cg.update(two_mb)
    cg.destroy()


def test_kill_all_never_signals_a_pid_that_left_the_cgroup(cgroup_parent: str, spawn, monkeypatch) -> None:
    """Between reading cgroup.procs and signalling, a listed process may exit and its pid go to a
    process outside the container. Simulated: the sweep's read lists an outsider's pid."""
    cg = CgroupV1(f"{cgroup_parent}/c11")
    cg.create(None)
    spawn(cg, "sleep", "1000")
    outsider = subprocess.Popen(["sleep", "1000"])
    try:
        real_pids, calls = cg.pids, iter(range(1000))
        monkeypatch.setattr(cg, "pids", lambda: [outsider.pid] if next(calls) == 1 else real_pids())
        cg.kill_all(signal.SIGKILL)
        assert outsider.poll() is None, "a process outside the cgroup was signalled"
    finally:
        outsider.kill()
        outsider.wait()
    monkeypatch.undo()
    cg.kill_all(signal.SIGKILL)
    wait_for(lambda: cg.pids() == [], "the cgroup to empty")
    cg.destroy()


def test_a_memory_limit_below_what_cannot_be_reclaimed_names_the_usage(cgroup_parent: str, spawn) -> None:
    with open("/proc/swaps") as f:
        if len(f.read().splitlines()) > 1:
            pytest.skip("with swap, the kernel could make room by swapping out")
    cg = CgroupV1(f"{cgroup_parent}/c10")
    cg.create({"memory": {"limit": 256 << 20}})
    p = spawn(cg, PYTHON, "-c", "x = bytearray(40 << 20); x[::4096] = b'1' * len(x[::4096]); "
                                "import time; time.sleep(1000)")
    wait_for(lambda: cg.stats()["memory"]["usage"]["usage"] > 40 << 20)
    with pytest.raises(CgroupError, match=r"4096 is below what the cgroup uses and cannot reclaim "
                                          r"\(usage \d+, peak \d+\)"):
        cg.update({"memory": {"limit": 4096}})  # (anonymous memory, and no swap to move it to)
    assert read(cg, "memory", "memory.limit_in_bytes") == str(256 << 20)
    p.popen.kill()
    p.wait()
    cg.destroy()
