"""The container's procfs, which the runtime itself writes to from inside the container's root
(sysctls, the oom score, LSM labels): kept genuine, and written only through a handle that is it.

An image chooses its symlinks and a pod author its volumes. A volume mounted where a path resolves
into /proc (an image's `/vol -> /proc/sys/kernel`) would put files of the author's choosing where
the runtime writes next, and a symlink among them could take a namespaced sysctl's write to a
host-wide one (vm.drop_caches), or an AppArmor profile's to a file nobody reads. So, as runc's
checkProcMount has it: no mount but proc lands on procfs, except binds on the files lxcfs serves;
nothing but proc, or a bind of a procfs, covers the rootfs's /proc; and proc goes only on that real
directory, never through a symlink. The runtime's writes then go through openat2 from the root of
the procfs at /proc, beneath it, crossing no mount and following no magic link.
"""

import errno
import os
import stat

from . import syscalls as sc
from .errors import RuntimeFailure

PROC_ROOT_INO = 1
# The files lxcfs emulates, which its users bind over the container's own (runc lets them too).
_LXCFS_FILES = frozenset(f"proc/{name}" for name in (
    "cpuinfo", "diskstats", "meminfo", "stat", "swaps", "uptime", "loadavg", "slabinfo", "net/dev",
    "sys/kernel/ns_last_pid"))


def check_mount_target(root_fd: int, target: int, fstype: str, source: str, where: str) -> None:
    """Refuse to mount `fstype` from `source` on `target` (the O_PATH fd the mount will use) if that
    breaks the rules above; `where` names the spec's entry in the RuntimeFailure."""
    at = os.path.relpath(os.readlink(f"/proc/self/fd/{target}"), os.readlink(f"/proc/self/fd/{root_fd}"))
    if fstype == "proc":
        if at != "proc" or not stat.S_ISDIR(os.fstat(target).st_mode):
            raise RuntimeFailure("rootfs", f"{where}: proc must be mounted on the rootfs's own /proc directory, "
                                           f"not on /{at} (the image may not move it with a symlink)")
        return
    if at == "proc":
        if not _is_procfs(source):
            raise RuntimeFailure("rootfs", f"{where}: only proc, or a bind of a procfs, may be mounted on /proc")
    elif sc.fstatfs_type(target) == sc.PROC_SUPER_MAGIC and at not in _LXCFS_FILES:
        raise RuntimeFailure("rootfs", f"{where}: /{at} cannot be mounted on: it is inside /proc")


def _is_procfs(path: str) -> bool:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return sc.fstatfs_type(fd) == sc.PROC_SUPER_MAGIC
    finally:
        os.close(fd)


def write(path: str, value: str) -> None:
    """Write `value` to `path` ("sys/kernel/shmmax", "self/oom_score_adj") of the procfs mounted at
    /proc of our root; an OSError names the file and says why when /proc or the way to it is not
    the container's own."""
    proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if sc.fstatfs_type(proc) != sc.PROC_SUPER_MAGIC or os.fstat(proc).st_ino != PROC_ROOT_INO:
            raise OSError(errno.EXDEV, f"/proc/{path}: /proc is not the root of a procfs")
        try:
            fd = sc.openat2(proc, path, os.O_WRONLY, sc.RESOLVE_BENEATH | sc.RESOLVE_NO_XDEV | sc.RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.ELOOP):
                raise OSError(e.errno, f"/proc/{path} is reached through a mount or a link that leaves the "
                                       "container's procfs") from None
            raise
    finally:
        os.close(proc)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
