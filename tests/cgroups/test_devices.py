"""Device rules enforced by the kernel: v1 devices.allow/deny, and the v2 eBPF program.

The eBPF program needs only *a* cgroup2 hierarchy, so it is tested here on the host's hybrid
`unified` mount as well as in the pure-v2 guest."""

from __future__ import annotations

import errno
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from railcar.runtime.cgroups import CgroupV1, CgroupV2
from railcar.runtime.cgroups.devices_bpf import apply_device_rules, attached_ids
from railcar.runtime.cgroups.interface import remove_tree
from railcar.runtime.cgroups.resources import device_rules

from .conftest import v1_only, v2_only


def cgroup2_mount() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.startswith("cgroup2 "):
                return pre.split()[4]
    return None


def probe(cgroup_procs: str, tmp: Path) -> dict[str, int]:
    """In a child moved into the cgroup: errno (0 = allowed) of each device operation."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            with open(cgroup_procs, "w") as f:
                f.write("0")
            results = {}
            ops = {
                "read /dev/null": lambda: os.close(os.open("/dev/null", os.O_RDONLY)),
                "write /dev/zero": lambda: os.close(os.open("/dev/zero", os.O_WRONLY)),
                "read /dev/zero": lambda: os.close(os.open("/dev/zero", os.O_RDONLY)),
                "read /dev/full": lambda: os.close(os.open("/dev/full", os.O_RDONLY)),
                "mknod 1:3": lambda: os.mknod(tmp / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3)),
                "mknod 1:5": lambda: os.mknod(tmp / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5)),
            }
            for name, op in ops.items():
                try:
                    op()
                    results[name] = 0
                except OSError as e:
                    results[name] = e.errno
            os.write(w, json.dumps(results).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return json.loads(out)


RULES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
    {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "w"},
]
EXPECTED = {"read /dev/null": 0, "mknod 1:3": errno.EPERM, "mknod 1:5": 0, "write /dev/zero": errno.EPERM,
            "read /dev/zero": 0, "read /dev/full": errno.EPERM}


@pytest.fixture
def cgroup2_dir() -> Iterator[str]:
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    d = f"{mount}/railcar-test-{uuid.uuid4().hex[:10]}"
    os.mkdir(d)
    yield d
    remove_tree(d)
    assert not os.path.exists(d)


def test_bpf_program_enforces_rules(cgroup2_dir: str, tmp_path: Path) -> None:
    os.mkdir(f"{cgroup2_dir}/a")
    apply_device_rules(f"{cgroup2_dir}/a", device_rules({"devices": RULES}))
    assert probe(f"{cgroup2_dir}/a/cgroup.procs", tmp_path) == EXPECTED


def test_bpf_program_is_replaced_not_stacked(cgroup2_dir: str, tmp_path: Path) -> None:
    d = f"{cgroup2_dir}/b"
    os.mkdir(d)
    apply_device_rules(d, device_rules({"devices": [{"allow": False, "access": "rwm"}]}))
    apply_device_rules(d, device_rules({"devices": [
        {"allow": True, "access": "rwm"}, {"allow": False, "type": "c", "major": 1, "minor": 7, "access": "r"}]}))
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(attached_ids(fd)) == 1
    finally:
        os.close(fd)
    result = probe(f"{d}/cgroup.procs", tmp_path)
    assert result["read /dev/null"] == 0  # the deny-all program is gone
    assert result["mknod 1:3"] == 0
    assert result["read /dev/full"] == errno.EPERM  # the new one applies


@v1_only
def test_v1_devices_deny_mknod(cgroup_parent: str, tmp_path: Path) -> None:
    cg = CgroupV1(f"{cgroup_parent}/dev")
    cg.create({"devices": RULES})
    d = cg.dir("devices")
    assert d is not None
    assert probe(f"{d}/cgroup.procs", tmp_path) == EXPECTED
    cg.destroy()


@pytest.mark.cgroup_v2
@v2_only
def test_v2_driver_applies_device_rules(cgroup_parent: str, tmp_path: Path) -> None:
    cg = CgroupV2(f"{cgroup_parent}/dev")
    cg.create({"devices": RULES})
    assert probe(f"{cg.dir}/cgroup.procs", tmp_path) == EXPECTED
    cg.destroy()
