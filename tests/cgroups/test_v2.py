"""The v2 driver on a pure cgroup v2 kernel (run in the cgroup2 guest; skipped elsewhere)."""

from __future__ import annotations

import os
import signal

import pytest
from google.protobuf import json_format

from railcar.runtime.cgroups import Cgroup, CgroupError, CgroupV2, ResourceError, open_cgroup
from railcar.ttrpc_proto.api import cgroups_v2_pb2

from .conftest import (PYTHON, assert_oom_kill_is_notified, assert_pids_limit_stops_fork_bomb, assert_refused,
                       idle_metrics, v2_only, wait_for)

pytestmark = [pytest.mark.cgroup_v2, v2_only]


def read(cg: CgroupV2, name: str) -> str:
    with open(f"{cg.dir}/{name}") as f:
        return f.read().strip()


def test_open_cgroup_picks_v2(cgroup_parent: str) -> None:
    assert isinstance(open_cgroup(f"{cgroup_parent}/x", "x"), CgroupV2)


def test_create_applies_resources(cgroup_parent: str) -> None:
    cg = CgroupV2(f"{cgroup_parent}/c1")
    cg.create({
        "memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 16 << 20},
        "cpu": {"shares": 1024, "quota": 20000, "period": 100000, "burst": 5000},
        "pids": {"limit": 42},
        "unified": {"memory.high": str(60 << 20)},
    })
    assert read(cg, "memory.max") == str(64 << 20)
    assert read(cg, "memory.swap.max") == str(32 << 20)
    assert read(cg, "memory.low") == str(16 << 20)
    assert read(cg, "memory.high") == str(60 << 20)
    assert read(cg, "cpu.weight") == "39"
    assert read(cg, "cpu.max") == "20000 100000"
    assert read(cg, "cpu.max.burst") == "5000"
    cg.update({"cpu": {"idle": 1}})
    assert read(cg, "cpu.idle") == "1"
    cg.update({"cpu": {"shares": 1024, "idle": 1}})   # CRI resends the whole resources: no refusal
    cg.update({"cpu": {"idle": 0, "shares": 2048}})
    assert (read(cg, "cpu.idle"), read(cg, "cpu.weight")) == ("0", "79")
    cg.update({"cpu": {"quota": 50000, "burst": 40000}})
    cg.update({"cpu": {"quota": 20000, "burst": 10000}})   # each is checked against the other's current value
    assert (read(cg, "cpu.max"), read(cg, "cpu.max.burst")) == ("20000 100000", "10000")
    assert read(cg, "pids.max") == "42"
    if not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB"):  # nothing to limit: accepted
        cg.update({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    cg.update({"cpu": {"quota": -1}, "memory": {"limit": -1, "swap": -1}, "pids": {"limit": -1}})
    assert read(cg, "cpu.max") == "max 100000"
    assert read(cg, "memory.max") == "max"
    assert read(cg, "pids.max") == "max"
    cg.destroy()
    assert not os.path.exists(cg.dir)
    cg.destroy()


@pytest.mark.parametrize(("resources", "path"), [
    ({"memory": {"swappiness": 10}}, "linux.resources.memory.swappiness"),
    ({"memory": {"swap": 1 << 20}}, "linux.resources.memory.swap"),
    ({"cpu": {"realtimeRuntime": 1000}}, "linux.resources.cpu.realtimeRuntime"),
    ({"unified": {"../escape": "1"}}, "linux.resources.unified.../escape"),
    ({"unified": {"nosuch.file": "1"}}, "linux.resources.unified.nosuch.file"),
])
def test_unsupported_resources_are_clear_errors(cgroup_parent: str, resources: dict, path: str) -> None:
    assert_refused(CgroupV2(f"{cgroup_parent}/bad"), resources, path)


def test_a_refused_update_changes_nothing_and_unlimited_memory_lifts_swap(cgroup_parent: str) -> None:
    cg = CgroupV2(f"{cgroup_parent}/c8")
    cg.create({"memory": {"limit": 64 << 20, "swap": 64 << 20}, "pids": {"limit": 42}})
    try:
        swap_below = {"pids": {"limit": 7}, "memory": {"limit": 32 << 20, "swap": 16 << 20}}
        no_such_file = {"memory": {"limit": 32 << 20}, "unified": {"nosuch.file": "1"}}
        for refused, path in ((swap_below, "memory.swap"), (no_such_file, "unified.nosuch.file")):
            with pytest.raises(ResourceError) as e:
                cg.update(refused)
            assert e.value.path == f"linux.resources.{path}"
            assert (read(cg, "memory.max"), read(cg, "pids.max")) == (str(64 << 20), "42")
        # Refused by the kernel half-way (no such device): what it wrote before is put back, as runc does.
        with pytest.raises(CgroupError, match="io.max"):
            cg.update({"memory": {"limit": 32 << 20}, "cpu": {"quota": 20000, "period": 100000},
                       "blockIO": {"throttleReadBpsDevice": [{"major": 4095, "minor": 4095, "rate": 1}]}})
        assert (read(cg, "memory.max"), read(cg, "cpu.max")) == (str(64 << 20), "max 100000")
        # Putting idle back resets the weight in the kernel: it is put back after it.
        cg.update({"cpu": {"shares": 512}})
        with pytest.raises(CgroupError, match="io.max"):
            cg.update({"cpu": {"idle": 1},
                       "blockIO": {"throttleReadBpsDevice": [{"major": 4095, "minor": 4095, "rate": 1}]}})
        assert (read(cg, "cpu.idle"), read(cg, "cpu.weight")) == ("0", "20")
        # As runc: memory -1 with swap unset lifts both limits (v1's memory+swap went with the memory).
        cg.update({"memory": {"limit": -1}})
        assert (read(cg, "memory.max"), read(cg, "memory.swap.max")) == ("max", "max")
    finally:
        cg.destroy()


def test_processes_freeze_thaw_kill(cgroup_parent: str, spawn) -> None:
    cg = CgroupV2(f"{cgroup_parent}/c3")
    cg.create(None)
    a = spawn(cg, "sleep", "1000")
    b = spawn(cg, "sleep", "1000")
    assert cg.pids() == sorted([a.pid, b.pid])
    cg.freeze()
    assert cg.frozen()
    assert read(cg, "cgroup.events").splitlines()[1] == "frozen 1"
    cg.thaw()
    assert not cg.frozen()
    cg.kill_all(signal.SIGKILL)
    assert a.wait() == -signal.SIGKILL and b.wait() == -signal.SIGKILL
    wait_for(lambda: cg.pids() == [], "the cgroup to empty")
    cg.destroy()


def test_kill_all_with_other_signals_sweeps(cgroup_parent: str, spawn) -> None:
    cg = CgroupV2(f"{cgroup_parent}/c3b")
    cg.create(None)
    a = spawn(cg, "sleep", "1000")
    cg.kill_all(signal.SIGTERM)
    assert a.wait() == -signal.SIGTERM
    cg.destroy()


def test_state_round_trip(cgroup_parent: str) -> None:
    cg = CgroupV2(f"{cgroup_parent}/c4")
    again = Cgroup.from_state(cg.to_state())
    assert isinstance(again, CgroupV2) and again.dir == cg.dir


def test_stats_parse_as_metrics_and_count_usage(cgroup_parent: str, spawn) -> None:
    cg = CgroupV2(f"{cgroup_parent}/c5")
    cg.create({"pids": {"limit": 10}, "memory": {"limit": 256 << 20}})
    p = spawn(cg, PYTHON, "-c", "x = bytearray(40 << 20); x[::4096] = b'1' * len(x[::4096]); "
                                "import time; time.sleep(1000)")
    wait_for(lambda: cg.stats()["memory"]["usage"] > 40 << 20, "memory usage")
    metrics = json_format.ParseDict(cg.stats(), cgroups_v2_pb2.Metrics())
    assert metrics.pids.current == 1 and metrics.pids.limit == 10
    assert metrics.memory.usage > 40 << 20 and metrics.memory.usage_limit == 256 << 20
    assert metrics.memory.anon > 30 << 20
    assert metrics.cpu.usage_usec > 0
    p.popen.kill()
    p.wait()
    cg.destroy()


def test_an_idle_cgroup_has_every_part_of_its_metrics(cgroup_parent: str) -> None:
    cg = CgroupV2(f"{cgroup_parent}/c7")
    with idle_metrics(cg, cgroups_v2_pb2.Metrics, "pids", "cpu", "memory", "io", "rdma") as metrics:
        # No limit reads as the largest uint64, as containerd's library has it: 0 would be a limit of nothing.
        assert metrics.pids.limit == metrics.memory.usage_limit == metrics.memory.swap_limit == (1 << 64) - 1


def test_oom_kill_is_notified(cgroup_parent: str, spawn) -> None:
    assert_oom_kill_is_notified(CgroupV2(f"{cgroup_parent}/c6"), spawn)


def test_pids_limit_stops_fork_bomb(cgroup_parent: str, spawn) -> None:
    cg = CgroupV2(f"{cgroup_parent}/c7")
    assert_pids_limit_stops_fork_bomb(cg, spawn, lambda name: read(cg, name))
