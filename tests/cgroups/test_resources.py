"""The shared `linux.resources` parsing, and the v2 driver's translation of it, on plain files.

A unit test of the parsers plus the v2 driver pointed at a temporary directory laid out like a
cgroup2 mount, so the translation (OCI memory+swap -> v2 swap alone, weights, refusals) is checked
on every host, not only in the cgroup2 guest.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format

from railcar.runtime.cgroups import CgroupV2, ResourceError, stats_v2
from railcar.runtime.cgroups.errors import CgroupError
from railcar.runtime.cgroups import resources as res
from railcar.ttrpc_proto.api import cgroups_v2_pb2


def test_memory_parses_every_field() -> None:
    m = res.memory({"memory": {"limit": 64, "swap": 96, "reservation": 16, "kernel": -1, "kernelTCP": 8,
                               "swappiness": 60, "disableOOMKiller": False}})
    assert m == res.Memory(64, 96, 16, -1, 8, 60, False)
    assert res.memory({}) == res.Memory() == res.memory({"memory": None})


@pytest.mark.parametrize(("memory", "path"), [
    ({"limit": True}, "linux.resources.memory.limit"),        # JSON true is not an integer
    ({"swap": -2}, "linux.resources.memory.swap"),
    ({"swappiness": 101}, "linux.resources.memory.swappiness"),
    ({"disableOOMKiller": 1}, "linux.resources.memory.disableOOMKiller"),
])
def test_memory_errors_name_the_json_path(memory: dict, path: str) -> None:
    with pytest.raises(ResourceError) as e:
        res.memory({"memory": memory})
    assert e.value.path == path


def test_cpu_parses_every_field() -> None:
    c = res.cpu({"cpu": {"shares": 512, "quota": -1, "period": 100000, "realtimeRuntime": 950,
                         "realtimePeriod": 1000, "cpus": "0-1", "mems": "0"}})
    assert c == res.Cpu(512, -1, 100000, 950, 1000, "0-1", "0")
    assert res.cpu({}) == res.Cpu() == res.cpu({"cpu": None})


@pytest.mark.parametrize(("cpu", "path"), [
    ({"shares": res.MAX_CPU_SHARES + 1}, "linux.resources.cpu.shares"),
    ({"quota": -2}, "linux.resources.cpu.quota"),
    ({"period": "100000"}, "linux.resources.cpu.period"),
    ({"realtimeRuntime": -2}, "linux.resources.cpu.realtimeRuntime"),
    ({"realtimePeriod": True}, "linux.resources.cpu.realtimePeriod"),
    ({"cpus": 1}, "linux.resources.cpu.cpus"),
    ({"mems": ["0"]}, "linux.resources.cpu.mems"),
    ([], "linux.resources.cpu"),
])
def test_cpu_errors_name_the_json_path(cpu: dict | list, path: str) -> None:
    with pytest.raises(ResourceError) as e:
        res.cpu({"cpu": cpu})
    assert e.value.path == path


def test_weight_devices() -> None:
    bio = {"weightDevice": [{"major": 8, "minor": 0, "weight": 500}, {"major": 8, "minor": 16, "leafWeight": 10}]}
    assert res.weight_devices(bio) == [res.WeightDevice("blockIO.weightDevice[0]", 8, 0, 500, None),
                                       res.WeightDevice("blockIO.weightDevice[1]", 8, 16, None, 10)]
    with pytest.raises(ResourceError) as e:
        res.weight_devices({"weightDevice": [{"major": 8, "weight": 5}]})
    assert e.value.path == "linux.resources.blockIO.weightDevice[0]"
    with pytest.raises(ResourceError) as e:
        res.weight_devices({"weightDevice": [{"major": 8, "minor": 0, "weight": 1001}]})
    assert e.value.path == "linux.resources.blockIO.weightDevice[0].weight"


@pytest.fixture
def fake_v2(tmp_path: Path) -> CgroupV2:
    """A CgroupV2 whose root is a directory holding the control files the driver writes."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu memory io\n")
    leaf = tmp_path / "c"
    leaf.mkdir()
    for name in ("memory.max", "memory.swap.max", "memory.low", "io.weight", "cpu.weight", "cpuset.cpus",
                 "cpuset.mems"):
        (leaf / name).write_text("")
    (leaf / "cpu.max").write_text("max 100000\n")
    return CgroupV2("/c", root=str(tmp_path))


def test_v2_translates_memory_and_weights(fake_v2: CgroupV2) -> None:
    fake_v2.update({"memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 16 << 20, "kernel": 1 << 20},
                    "blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 1000}]}})
    d = Path(fake_v2.dir)
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "memory.swap.max").read_text() == str(32 << 20)   # v2 counts swap alone
    assert (d / "memory.low").read_text() == str(16 << 20)
    assert (d / "io.weight").read_text() == "8:0 10000"


def test_v2_translates_cpu(fake_v2: CgroupV2) -> None:
    fake_v2.update({"cpu": {"shares": 1024, "quota": 20000, "cpus": "0", "mems": "0"}})
    d = Path(fake_v2.dir)
    assert (d / "cpu.weight").read_text() == "39"  # 1 + (1024 - 2) * 9999 / 262142
    assert (d / "cpu.max").read_text() == "20000 100000"  # the period kept as it was
    assert ((d / "cpuset.cpus").read_text(), (d / "cpuset.mems").read_text()) == ("0", "0")
    (d / "cpu.max").write_text("")  # plain files are not truncated by a write as cgroup files are
    fake_v2.update({"cpu": {"quota": -1, "period": 50000}})
    assert (d / "cpu.max").read_text() == "max 50000"


@pytest.mark.parametrize(("resources", "path"), [
    ({"cpu": {"realtimePeriod": 1000}}, "linux.resources.cpu.realtimePeriod"),
    ({"memory": {"kernelTCP": 1}}, "linux.resources.memory.kernelTCP"),
    ({"memory": {"disableOOMKiller": True}}, "linux.resources.memory.disableOOMKiller"),
    ({"memory": {"limit": 100, "swap": 50}}, "linux.resources.memory.swap"),
    ({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "leafWeight": 5}]}},
     "linux.resources.blockIO.weightDevice[0].leafWeight"),
])
def test_v2_refusals_name_the_json_path(fake_v2: CgroupV2, resources: dict, path: str) -> None:
    with pytest.raises(ResourceError) as e:
        fake_v2.update(resources)
    assert e.value.path == path


def test_v2_says_whether_the_controller_or_only_its_file_is_missing(fake_v2: CgroupV2) -> None:
    """A control file that does not exist: the controller is missing from the cgroup, or (listed in
    its cgroup.controllers) this kernel lacks the file (io.weight without BFQ or io.cost)."""
    (Path(fake_v2.dir) / "cgroup.controllers").write_text("cpu memory io\n")
    with pytest.raises(ResourceError, match="io.nosuch does not exist in .*: this kernel has the io controller"):
        fake_v2.update({"unified": {"io.nosuch": "1"}})
    with pytest.raises(ResourceError, match="the hugetlb controller is not available"):
        fake_v2.update({"unified": {"hugetlb.2MB.max": "1"}})


def test_v2_names_the_period_when_only_the_period_was_refused(fake_v2: CgroupV2, monkeypatch) -> None:
    """The kernel refuses cpu.max "max 100" (a period below 1 ms): the field to blame is the period."""
    def refuse(path: str, value: object) -> None:
        raise CgroupError(f"writing {value!r} to {path}: Invalid argument", 22)

    monkeypatch.setattr(fake_v2, "_set", refuse)
    with pytest.raises(CgroupError, match=r"^cgroups: linux\.resources\.cpu\.period: writing 'max 100'"):
        fake_v2.update({"cpu": {"period": 100}})


def test_the_pids_limit_reached_may_be_an_ancestors(tmp_path: Path) -> None:
    """An exec's process may be moved in, which pids.max does not count: what is checked before is
    every level up to the root, a pod's cgroup (kubelet's pod pids limit) as much as the container's."""
    container = tmp_path / "pod" / "c1"
    container.mkdir(parents=True)
    for directory, limit, current in ((container, "max", "1"), (container.parent, "3", "2")):
        (directory / "pids.max").write_text(f"{limit}\n")
        (directory / "pids.current").write_text(f"{current}\n")
    cgroup = CgroupV2("/pod/c1", root=str(tmp_path))
    assert cgroup.pids_limit_reached() is None
    (container.parent / "pids.current").write_text("3\n")
    assert cgroup.pids_limit_reached() == f"{container.parent}/pids.max 3"
    (container / "pids.max").write_text("1\n")
    assert cgroup.pids_limit_reached() == f"{container}/pids.max 1"


def test_rdma_stats_read_as_containerd_reports_them(fake_v2: CgroupV2) -> None:
    """RdmaStat is always set, as containerd's cgroups library sets it (runc's shim shows `"rdma": {}`),
    and "max" reads as the largest uint32."""
    d = Path(fake_v2.dir)
    metrics = json_format.ParseDict(stats_v2.collect(str(d)), cgroups_v2_pb2.Metrics())
    assert metrics.HasField("rdma") and not metrics.rdma.current and not metrics.rdma.limit
    (d / "rdma.current").write_text("mlx4_0 hca_handle=2 hca_object=2000\nocrdma1 hca_handle=3 hca_object=0\n")
    (d / "rdma.max").write_text("mlx4_0 hca_handle=max hca_object=2000\nocrdma1 hca_handle=3 hca_object=max\n")
    metrics = json_format.ParseDict(stats_v2.collect(str(d)), cgroups_v2_pb2.Metrics())
    assert [(e.device, e.hca_handles, e.hca_objects) for e in metrics.rdma.current] == [
        ("mlx4_0", 2, 2000), ("ocrdma1", 3, 0)]
    assert [(e.device, e.hca_handles, e.hca_objects) for e in metrics.rdma.limit] == [
        ("mlx4_0", (1 << 32) - 1, 2000), ("ocrdma1", 3, (1 << 32) - 1)]
