"""Checks, from outside, that a process runs railcar's sealed view of its interpreter (CVE-2019-5736)."""

import errno
import os


def runs_sealed(pid: int) -> bool:
    """Whether `pid` runs its interpreter through a read-only overlayfs that its mount table does not
    show: opening /proc/<pid>/exe for writing is refused as a read-only filesystem, and the mount it
    is on is attached nowhere. (On this host railcar never needs its memfd fallback.)"""
    try:
        os.close(os.open(f"/proc/{pid}/exe", os.O_WRONLY | os.O_CLOEXEC))  # never written to
        return False
    except OSError as e:
        if e.errno != errno.EROFS:
            return False
    exe = os.open(f"/proc/{pid}/exe", os.O_PATH | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{exe}") as f:
            mount = next(line.split()[1] for line in f if line.startswith("mnt_id:"))
    finally:
        os.close(exe)
    with open(f"/proc/{pid}/mountinfo") as f:
        return all(line.split(" ", 1)[0] != mount for line in f)
