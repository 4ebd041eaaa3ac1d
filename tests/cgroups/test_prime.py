"""Priming cgroup migration (railcar.runtime.cgroups.prime), on v1 here and v2 in the guest."""

from __future__ import annotations

import os

import pytest

from railcar.runtime.cgroups import files
from railcar.runtime.cgroups.prime import prime, scratch_parent

from .conftest import HOST_VERSION

pytestmark = pytest.mark.cgroup_v2  # runs on this v1 host and again on the pure v2 kernel


def _scratch_dirs() -> list[str]:
    return [name for name in os.listdir(scratch_parent()) if name.startswith("railcar-prime-")]


def test_scratch_parent_is_a_hierarchy_root_without_limits() -> None:
    if HOST_VERSION == 2:
        assert scratch_parent() == "/sys/fs/cgroup"
    else:
        assert os.path.basename(scratch_parent()) in ("freezer", "systemd")
    assert os.path.exists(f"{scratch_parent()}/cgroup.procs")


def test_prime_moves_a_child_into_a_scratch_cgroup_then_removes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The migration really happens (the child is listed in the scratch cgroup), and afterwards
    neither the cgroup nor an unreaped child is left."""
    seen_r, seen_w = os.pipe()
    real_write = files.write

    def write_then_report(path: str, value: str | int) -> None:
        real_write(path, value)
        with open(os.path.join(os.path.dirname(path), "cgroup.procs")) as f:
            members = f.read().split()
        os.write(seen_w, f"{path} {value} {' '.join(members)}".encode())

    monkeypatch.setattr(files, "write", write_then_report)
    try:
        prime()
        report = os.read(seen_r, 4096).decode().split()
    finally:
        os.close(seen_r)
        os.close(seen_w)
    path, pid, members = report[0], report[1], report[2:]
    assert path == f"{scratch_parent()}/railcar-prime-{os.getpid()}/cgroup.procs"
    assert members == [pid] and int(pid) != os.getpid()
    assert not os.path.exists(os.path.dirname(path))
    assert _scratch_dirs() == []
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_prime_that_cannot_migrate_removes_its_scratch_cgroup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused migration (the child dies without joining) still leaves nothing behind."""
    def refuse(path: str, value: str | int) -> None:
        raise OSError("refused")

    monkeypatch.setattr(files, "write", refuse)
    prime()
    assert _scratch_dirs() == []
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
