"""Where a container's cgroup lives: turning the spec's `cgroupsPath` into one absolute path.

The rules (the same path is used under every hierarchy, v1 or v2):

* absolute (`/default/web`, what containerd/ctr send as `/<namespace>/<id>`) -> used as is;
* relative (`pods/web`) -> under railcar's own parent, `/railcar/pods/web`. Never relative to the
  cgroup of the calling process: the shim may itself live in a cgroup it must not populate
  (e.g. a supervisor's), and a path must not change meaning with the caller;
* missing or empty -> `/railcar/<container id>`;
* systemd style `slice:prefix:name` (CRI with the systemd cgroup driver) -> the cgroupfs path
  systemd would use: the slice expanded into its ancestors plus `<prefix>-<name>.scope`, e.g.
  `kubepods-besteffort-pod1.slice:cri-containerd:abc` ->
  `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope`.
  railcar writes the files itself (no systemd D-Bus unit), which is what a cgroupfs driver does.

`..` components are refused: a spec must not reach outside the hierarchy it names.
"""

from __future__ import annotations

from ..errors import SpecError

RAILCAR_PARENT = "/railcar"


class CgroupPathError(SpecError):
    """The spec's cgroupsPath cannot be turned into a safe cgroup path."""

    def __init__(self, problem: str) -> None:
        super().__init__("linux.cgroupsPath", problem)


def resolve(cgroups_path: str | None, container_id: str) -> str:
    """Return the absolute cgroup path (no trailing slash) for `cgroups_path` per the rules above."""
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise CgroupPathError(f"is missing and container id {container_id!r} is not a path component")
        return f"{RAILCAR_PARENT}/{container_id}"
    if "/" not in cgroups_path and cgroups_path.count(":") == 2:
        path = _systemd_to_cgroupfs(cgroups_path)
    elif cgroups_path.startswith("/"):
        path = cgroups_path
    else:
        path = f"{RAILCAR_PARENT}/{cgroups_path}"
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CgroupPathError(f"{cgroups_path!r} contains '..'")
    if not parts:
        raise CgroupPathError(f"{cgroups_path!r} names the root cgroup")
    return "/" + "/".join(parts)


def _systemd_to_cgroupfs(spec_path: str) -> str:
    slice_name, prefix, name = spec_path.split(":")
    if not name:
        raise CgroupPathError(f"{spec_path!r}: systemd form slice:prefix:name has an empty name")
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    if name.endswith(".slice"):
        unit = name  # a slice given as the unit itself is nested in the parent slice
    return expand_slice(slice_name or "system.slice") + "/" + unit


def expand_slice(slice_name: str) -> str:
    """`a-b-c.slice` -> `/a.slice/a-b.slice/a-b-c.slice`, systemd's nesting by dashes."""
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise CgroupPathError(f"{slice_name!r} is not a systemd slice name")
    stem = slice_name[: -len(".slice")]
    if stem == "-":
        return ""  # the root slice
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise CgroupPathError(f"invalid systemd slice name {slice_name!r}")
    words = stem.split("-")
    return "".join("/" + "-".join(words[: i + 1]) + ".slice" for i in range(len(words)))
