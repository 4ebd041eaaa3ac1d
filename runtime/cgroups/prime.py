"""Priming cgroup migration: pay the kernel's first-migration wait before a container needs it.

Moving a process into a cgroup takes one global lock, cgroup_threadgroup_rwsem, for writing. When
no migration happened lately, taking it first waits out an RCU grace period (rcu_sync_enter): 6 to
15 ms on the test VM, the largest single cost of a create, which runc pays as well. A migration
that comes within about one grace period of the previous one goes straight through.

The shim learns of a container at `start`, some 10 ms before containerd sends Create. So the zygote
primes then: a throwaway process migrates into a scratch cgroup while containerd goes on, and the
container's own join at Create finds the wait over (measured: 0.5-0.8 ms instead of 10-16 ms). The scratch cgroup is a leaf at the root of one hierarchy (v1: the freezer,
which sets no limits; v2: the unified root), so it neither counts against nor touches anybody's
cgroup, and it is removed as soon as its process has exited.
"""

from __future__ import annotations

import os

from . import files
from .host import unified_root
from .interface import remove_tree
from .v1 import v1_mounts

_PREFERRED_V1 = ("freezer", "name=systemd")


def scratch_parent() -> str:
    """The hierarchy root a priming migration happens under."""
    root = unified_root()
    if root:
        return root
    mounts = v1_mounts()
    for controller in _PREFERRED_V1:
        if controller in mounts:
            return mounts[controller]
    if not mounts:
        raise OSError("no cgroup hierarchy is mounted")
    return mounts[sorted(mounts)[0]]


def prime() -> None:
    """Migrate a child into a scratch cgroup, reap it and remove the cgroup. Blocks for as long as
    the kernel makes the migration wait, so run it in a process of its own. Raises OSError if the
    scratch cgroup cannot be made; a refused migration only loses the gain. Either way nothing is
    left behind."""
    scratch = f"{scratch_parent()}/railcar-prime-{os.getpid()}"
    os.mkdir(scratch)
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                files.write(f"{scratch}/cgroup.procs", os.getpid())
                code = 0
            finally:
                os._exit(code)
        os.waitpid(pid, 0)
    finally:
        remove_tree(scratch)
