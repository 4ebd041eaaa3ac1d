"""Reading and writing cgroup control files, with errors that name the file and the value."""

from __future__ import annotations

import errno
import os

from .errors import CgroupError


def write(path: str, value: str | int) -> None:
    """Write one value with a single write(2): control files act on each write, not on close."""
    data = str(value).encode()
    fd = open_to_write(path, value)
    try:
        os.write(fd, data)
    except OSError as e:
        raise CgroupError(f"writing {value!r} to {path}: {e.strerror}", e.errno) from e
    finally:
        os.close(fd)


def check_writable(path: str, value: str | int) -> None:
    """Fail as `write` would fail to open the file, writing nothing: a control file acts on a
    write, not on an open."""
    os.close(open_to_write(path, value))


def open_to_write(path: str, value: str | int) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"cannot open {path} to write {value!r}: {e.strerror}", e.errno) from e


def read_back(path: str) -> str | None:
    """A one-line value that writing back restores (memory.max, cpu.max, io.weight's "default 100");
    None for a file that cannot be read or holds a list (a device's lines, oom_control's keys)."""
    try:
        text = read_optional(path)
    except (CgroupError, ValueError):  # write-only files (devices.allow); a name in another encoding
        return None
    text = (text or "").strip()
    return text if text and "\n" not in text else None


def read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError as e:
        raise CgroupError(f"reading {path}: {e.strerror}") from e


def read_optional(path: str) -> str | None:
    """The file's text, or None when the kernel does not provide it (controller or feature absent)."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENODEV):
            return None
        raise CgroupError(f"reading {path}: {e.strerror}") from e


def read_int(path: str, default: int = 0) -> int:
    """An integer file; `max` (v2's "no limit") and absence read as `default`."""
    text = read_optional(path)
    if text is None:
        return default
    text = text.strip()
    if text in ("", "max"):
        return default
    return int(text)


def read_keyed(path: str) -> dict[str, int]:
    """A flat keyed file (`key value` per line, e.g. memory.stat, cpu.stat); {} when absent."""
    text = read_optional(path) or ""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def read_pids(path: str) -> list[int]:
    """The pids in a cgroup.procs file; [] if the cgroup is already gone."""
    text = read_optional(path) or ""
    return [int(x) for x in text.split()]


def walk_dirs(root: str) -> list[str]:
    """`root` and every cgroup below it, deepest first (the order rmdir needs)."""
    out: list[str] = []
    for dirpath, _dirnames, _files in os.walk(root, topdown=False):
        out.append(dirpath)
    return out


def v2_cgroup_of(pid: int = 0) -> str | None:
    """Process `pid`'s (0: the caller's) cgroup v2 path as the caller's cgroup namespace sees it
    (None: gone, or in no v2 cgroup)."""
    try:
        with open(f"/proc/{pid or 'self'}/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    return next((line[3:] for line in lines if line.startswith("0::/")), None)
