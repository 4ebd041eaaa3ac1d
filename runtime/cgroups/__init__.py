"""cgroup drivers (v1 and v2) behind one interface.

`open_cgroup` resolves the spec's cgroupsPath (rules in `paths`) and picks the driver the host
needs: v2 on a pure cgroup v2 host, v1 otherwise (including hybrid hosts).
"""

from __future__ import annotations

from .errors import CgroupError, ResourceError
from .host import version as host_version
from .interface import Cgroup, OomWatcher
from .paths import CgroupPathError, resolve
from .v1 import CgroupV1
from .v2 import CgroupV2

__all__ = ["Cgroup", "CgroupError", "CgroupPathError", "CgroupV1", "CgroupV2", "OomWatcher", "ResourceError",
           "host_version", "open_cgroup"]


def open_cgroup(cgroups_path: str | None, container_id: str) -> Cgroup:
    """The container's cgroup (not yet created: call `create`)."""
    path = resolve(cgroups_path, container_id)
    return CgroupV2(path) if host_version() == 2 else CgroupV1(path)
