"""The container's procfs, which the runtime itself uses from inside the container's root (sysctls,
the oom score, LSM labels, the exec FIFO): kept genuine, and used only through a handle that is it.

An image chooses its symlinks and a pod author its volumes. A volume mounted where a path resolves
into /proc (an image's `/vol -> /proc/sys/kernel`) would put files of the author's choosing where
the runtime writes next, and a symlink among them could take a namespaced sysctl's write to a
host-wide one (vm.drop_caches), or an AppArmor profile's to a file nobody reads. So, as runc's
checkProcMount has it: no mount but proc lands on procfs, except binds on the files lxcfs serves;
nothing but proc, or a bind of a procfs, covers the rootfs's /proc; proc goes only on a real
directory, never through a symlink; and nothing covers the rootfs's root, which would bring a /proc
of its own. The runtime then reaches /proc only through the root of the procfs there, checked:
writes go beneath it, crossing no mount and following no magic link.
"""

import errno
import os
import stat

from . import syscalls as sc
from .errors import RuntimeFailure

PROC_ROOT_INO = 1
# The files lxcfs emulates, which its users bind over the container's own, and the FIPS switch
# (runc lets them too).
_LXCFS_FILES = frozenset(f"proc/{name}" for name in (
    "cpuinfo", "diskstats", "meminfo", "stat", "swaps", "uptime", "loadavg", "slabinfo", "sys/kernel/ns_last_pid",
    "sys/crypto/fips_enabled"))


def check_mount_target(root_fd: int, target: int, fstype: str, bind: bool, source: str, destination: str,
                       where: str) -> None:
    """Refuse to mount `fstype` (a bind if `bind`) from `source` on `target`, the O_PATH fd the mount
    will use for `destination`, if that breaks the rules above; `where` names the spec's entry."""
    at = os.path.relpath(os.readlink(f"/proc/self/fd/{target}"), os.readlink(f"/proc/self/fd/{root_fd}"))
    if at == ".":
        raise RuntimeFailure("rootfs", f"{where}: nothing may be mounted on the container's root")
    if fstype == "proc" and not bind:
        if at != os.path.normpath(destination).lstrip("/") or not stat.S_ISDIR(os.fstat(target).st_mode):
            raise RuntimeFailure("rootfs", f"{where}: proc must be mounted on a directory, not through a "
                                           f"symlink (it leads to /{at})")
        return
    if at == "proc":
        if not (bind and _is_procfs(source)):
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


def root() -> int:
    """An O_PATH fd of the procfs at /proc of our root, checked to be one (its root inode)."""
    proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if sc.fstatfs_type(proc) != sc.PROC_SUPER_MAGIC or os.fstat(proc).st_ino != PROC_ROOT_INO:
        os.close(proc)
        raise OSError(errno.EXDEV, "/proc is not the root of a procfs")
    return proc


def reopen(proc: int, fd: int, flags: int) -> int:
    """Open what our `fd` is again, with `flags`, through /proc/self/fd of `proc` (from `root()`,
    taken earlier: after a seccomp filter went in, this is one openat, as runc's reopen is)."""
    return os.open(f"self/fd/{fd}", flags | os.O_CLOEXEC, dir_fd=proc)


def write(path: str, value: str) -> None:
    """Write `value` to `path` ("sys/kernel/shmmax", "self/oom_score_adj") of the procfs mounted at
    /proc of our root; an OSError names the file and says why when /proc or the way to it is not
    the container's own."""
    try:
        proc = root()
    except OSError as e:
        raise OSError(e.errno, f"/proc/{path}: {e.strerror}") from None
    try:
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
