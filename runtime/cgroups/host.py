"""Which cgroup version the host runs, read from the mount table."""

from __future__ import annotations

CGROUP_ROOT = "/sys/fs/cgroup"


def unified_root(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The cgroup2 mount at /sys/fs/cgroup on a pure v2 host; None on v1 or hybrid hosts.

    A hybrid host (v1 controllers, plus a v2 tree at /sys/fs/cgroup/unified) counts as v1: its
    resource controllers live in the v1 hierarchies.
    """
    with open(mountinfo, encoding="utf-8") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[:1] == ["cgroup2"] and pre.split()[4] == CGROUP_ROOT:
                return CGROUP_ROOT
    return None


def version() -> int:
    return 2 if unified_root() else 1
