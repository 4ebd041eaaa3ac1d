"""Run the runtime from a sealed in-memory copy of its interpreter (CVE-2019-5736).

Until execve, the container init is a fork of the runtime, so ``/proc/<init>/exe`` — and, via
``#!/proc/self/exe`` or a symlink to it, the program a container asks to run — is the runtime's
own executable. If that were the host's python binary, a container process could open it for
writing and replace it. A process that creates containers therefore calls ``reexec_sealed()``
first thing: it re-executes itself from a memfd copy of its executable with every write seal
set, so the only file a container can reach that way is an unwritable private copy. The cost is
paid once per process (the interpreter binary is a few KB; python starts again).
"""

import fcntl
import os
import sys

_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def is_sealed() -> bool:
    """True if this process runs from a sealed memfd (so /proc/self/exe is not writable)."""
    try:
        fd = os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS == _SEALS
    except OSError:   # not a memfd: sealing is not supported there
        return False
    finally:
        os.close(fd)


def reexec_sealed() -> None:
    """Re-exec this process (same argv, environment and fds) from a sealed copy of its
    executable; returns only if it already runs from one."""
    if is_sealed():
        return
    src = os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC)
    try:
        mem = os.memfd_create("railcar-sealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        size = os.fstat(src).st_size
        offset = 0
        while offset < size:
            offset += os.sendfile(mem, src, offset, size - offset)
    finally:
        os.close(src)
    fcntl.fcntl(mem, fcntl.F_ADD_SEALS, _SEALS)
    sys.stdout.flush()
    sys.stderr.flush()
    # argv[0] stays the original path so python still finds its prefix / virtualenv.
    os.execve(mem, [sys.executable, *sys.orig_argv[1:]], os.environ)
