"""Run the runtime from an unwritable view of its interpreter (CVE-2019-5736).

Until execve, the container init is a fork of the runtime, so ``/proc/<init>/exe`` — and, via
``#!/proc/self/exe`` or a symlink to it, the program a container asks to run — is the runtime's
own executable. If that were the host's python binary as the host mounts it, a container process
could open it for writing and replace it. A process that creates containers therefore calls
``reexec_sealed()`` first thing, and re-executes itself from a view of its interpreter that nothing
can write through:

- as runc 1.2 does: the binary seen through an overlayfs with only lower layers (its own directory
  over an empty one), made with fsopen(2) and attached nowhere. Such an overlay has no layer to
  write to, whatever its mount flags; no path reaches it, so nobody can mount over it either. Its
  pages are the host binary's page cache, shared with every other Python process on the node. It
  holds the binary's directory while a process runs from it (a separate /usr cannot be unmounted
  meanwhile), and is never looked into again after the exec;
- where that fails (no overlayfs, no CAP_SYS_ADMIN, a binary deleted by an upgrade): a memfd copy
  of the binary with every write seal set. That copy is memory of its own, the size of the binary
  (6.5 MiB for Debian's statically linked python3.11), kept as long as a process runs from it: the
  zygote and everything it forked share one, each cold daemon has one.

The cost is paid once per process: python starts again.
"""

import fcntl
import os
import sys

from . import mountinfo, syscalls as sc

_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def is_sealed() -> bool:
    """True if this process runs from a sealed view of its executable (so /proc/self/exe is not
    writable)."""
    try:
        fd = os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return unwritable(fd)
    finally:
        os.close(fd)


def unwritable(fd: int) -> bool:
    """Whether the file `fd` is open on is one of the two views `reexec_sealed` makes: a memfd with
    every write seal, or a file on a read-only overlayfs that no mount in this namespace shows."""
    try:
        if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS == _SEALS:
            return True
    except OSError:   # not a memfd
        pass
    if sc.fstatfs_type(fd) != sc.OVERLAYFS_SUPER_MAGIC or not os.fstatvfs(fd).f_flag & os.ST_RDONLY:
        return False
    with open(f"/proc/self/fdinfo/{fd}") as f:
        mount = int(next(line.split()[1] for line in f if line.startswith("mnt_id:")))
    return all(entry.mount_id != mount for entry in mountinfo.read())


def reexec_sealed() -> None:
    """Re-exec this process (same argv, environment and fds) from a sealed view of its executable;
    returns only if it already runs from one."""
    if is_sealed():
        return
    try:
        exe = overlay_view(os.readlink("/proc/self/exe"))
    except OSError:
        exe = sealed_copy("/proc/self/exe")
    sys.stdout.flush()
    sys.stderr.flush()
    # argv[0] stays the original path so python still finds its prefix / virtualenv.
    os.execve(exe, [sys.executable, *sys.orig_argv[1:]], os.environ)


def overlay_view(binary: str) -> int:
    """An O_PATH fd of `binary` (an absolute path) on a new overlayfs attached nowhere, whose lower
    layers are the binary's directory over an empty one (overlayfs needs two to go without an upper
    layer). The empty directory is removed at once: the overlay holds it."""
    directory, name = os.path.split(binary)
    empty = f"/run/.railcar-seal-{os.getpid()}-{os.urandom(4).hex()}"
    os.mkdir(empty, 0o700)
    try:
        lower = ":".join(path.replace("\\", "\\\\").replace(":", "\\:") for path in (directory, empty))
        root = sc.mount_detached("overlay", {"lowerdir": lower},
                                 sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV)
    finally:
        os.rmdir(empty)
    try:
        exe = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
    finally:
        os.close(root)
    if not unwritable(exe):
        os.close(exe)
        raise OSError(f"{binary} through a lower-only overlayfs is not read-only")
    return exe


def sealed_copy(binary: str) -> int:
    """A memfd holding a copy of `binary`, every write seal set."""
    src = os.open(binary, os.O_RDONLY | os.O_CLOEXEC)
    try:
        mem = os.memfd_create("railcar-sealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        size = os.fstat(src).st_size
        offset = 0
        while offset < size:
            sent = os.sendfile(mem, src, offset, size - offset)
            if not sent:
                raise OSError(f"{binary} shrank to {offset} bytes while it was copied")
            offset += sent
    finally:
        os.close(src)
    fcntl.fcntl(mem, fcntl.F_ADD_SEALS, _SEALS)
    return mem
