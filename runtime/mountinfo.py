"""The kernel's mount table, /proc/<pid>/mountinfo, as records: one parser for every reader.

Each line is ``id parent major:minor root point options [optional...] - fstype source super_options``
(proc(5)). The kernel escapes space, tab, newline and backslash in paths as ``\\ooo``, so a path with
a space reads as one field; records hold the paths unescaped, as the file system names them.
"""

from __future__ import annotations

from typing import NamedTuple

PROC_SELF = "/proc/self/mountinfo"


class MountEntry(NamedTuple):
    root: str  # the directory of the mounted file system that shows at `point`
    point: str
    optional: tuple[str, ...]  # propagation: "shared:N", "master:N", "propagate_from:N", "unbindable"
    fstype: str
    source: str
    super_options: str
    mount_id: int  # unique while mounted: what /proc/<pid>/fdinfo's mnt_id names


def unescape(field: str) -> str:
    """``\\040`` -> " ": the kernel's octal escapes of a mountinfo path."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse(text: str) -> list[MountEntry]:
    """The records of a mountinfo text, in the kernel's order (a mount after the one it is on)."""
    entries = []
    for line in text.split("\n"):   # only newline and space separate: the kernel escapes just those
        if not line:                 # (and tab, backslash); other whitespace can be in a path
            continue
        fields = line.split(" ")
        sep = fields.index("-", 6)
        entries.append(MountEntry(unescape(fields[3]), unescape(fields[4]), tuple(fields[6:sep]),
                                  fields[sep + 1], unescape(fields[sep + 2]),
                                  fields[sep + 3] if len(fields) > sep + 3 else "", int(fields[0])))
    return entries


def read(path: str = PROC_SELF) -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse(f.read())
