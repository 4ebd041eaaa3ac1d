"""Which cgroup version the host runs, read from the mount table."""

from __future__ import annotations

from ..mountinfo import MountEntry, read

CGROUP_ROOT = "/sys/fs/cgroup"


def unified_root(mounts: list[MountEntry] | None = None) -> str | None:
    """The cgroup2 mount at /sys/fs/cgroup on a pure v2 host; None on v1 or hybrid hosts.

    A hybrid host (v1 controllers, plus a v2 tree at /sys/fs/cgroup/unified) counts as v1: its
    resource controllers live in the v1 hierarchies (the v1 driver joins the v2 tree too). `mounts`
    is the mount table, if read already.
    """
    for m in read() if mounts is None else mounts:
        if m.fstype == "cgroup2" and m.point == CGROUP_ROOT:
            return CGROUP_ROOT
    return None


def version() -> int:
    return 2 if unified_root() else 1
