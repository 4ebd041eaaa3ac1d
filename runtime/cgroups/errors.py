"""The two ways a cgroup operation fails: a bad request, or the kernel refusing it."""

from __future__ import annotations

from ..errors import RuntimeFailure, SpecError


class CgroupError(RuntimeFailure):
    """The kernel (or the host's cgroup setup) refused a cgroup operation; names the file or controller."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__("cgroups", message)
        self.errno = errno


class ResourceError(SpecError):
    """`linux.resources` asks for something invalid or unsupported here; names the JSON path."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"linux.resources.{path}".rstrip("."), problem)
