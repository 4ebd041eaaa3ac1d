"""Pools: containers that name no group share a daemon, up to `size()` of them.

A daemon is a Python process, and the part of it no other process shares stays about 7 MiB
however little it does; a container it serves adds about 60 KiB. containerd's Go shim costs about
3.4 MiB per container. So by default a container whose config.json names no group (no pod, no group
annotation) joins a pool: group `railcar-pool-<k>` of its containerd address and namespace, the
first such pool with room. The containers of a pool have no more in common than that; a pod keeps
a daemon of its own, as with containerd's runc shim, and so does a container that names a group of
its own (`io.containerd.railcar.v2.group`). `RAILCAR_POOL_SIZE` in containerd's environment sets how
many containers one daemon takes (1: a daemon for each container, as runc's shim does): a pooled
daemon that dies takes the control of all its containers with it, as a pod's shim does.

A pool's members are files named after their container ids, in a directory named after the pool's
socket under MEMBERS_ROOT. `start` writes a member before it prints the pool's address, and a
container's Delete (or `delete`) removes it. A daemon leaves its pool (removes its socket and the
directory, then exits) only when no member remains that a `start` wrote in the last grace period:
that container's Create is on its way to this daemon. `start` and a leaving daemon hold the
directory's lock (flock), so `start` never hands out the address of a daemon that is going away.
This module imports only what `start` and `delete` already import.
"""

import fcntl
import os
import time
from _collections_abc import Callable  # loaded at startup; collections.abc costs ~2 ms a `start`

POOL_ENV = "RAILCAR_POOL_SIZE"
DEFAULT_SIZE = 16
MEMBERS_ROOT = "/run/railcar/pools"


def size() -> int:
    """Containers per pooled daemon, from RAILCAR_POOL_SIZE; 1 or less turns pooling off."""
    try:
        return int(os.environ.get(POOL_ENV, DEFAULT_SIZE))
    except ValueError:
        return DEFAULT_SIZE


def group(index: int) -> str:
    """The group (the socket's name) of pool `index`."""
    return f"railcar-pool-{index}"


def poolable(container_id: str) -> bool:
    """Whether `container_id` can name a member file (containerd's ids always can)."""
    return bool(container_id) and "/" not in container_id and not container_id.startswith(".")


class Members:
    """The member files of the pool served on `socket_path`; held with `lock()`."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.dir = os.path.join(MEMBERS_ROOT, os.path.basename(socket_path))

    def exists(self) -> bool:
        """Whether this socket belongs to a pool (a plain group's daemon has no member directory)."""
        return os.path.isdir(self.dir)

    def lock(self, wait: bool = True) -> int | None:
        """Take the pool's lock (its directory's flock, made if need be); the fd to close to let
        go, or None if `wait` is False and someone holds it. A directory removed while we waited
        is made again: the lock on a removed directory guards nothing."""
        while True:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            try:
                fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:  # removed between the two calls
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return None
            if os.fstat(fd).st_nlink:
                return fd
            os.close(fd)

    def names(self) -> list[str]:
        try:
            return os.listdir(self.dir)
        except FileNotFoundError:
            return []

    def add(self, container_id: str) -> None:
        """Record `container_id` as a member joining now (under the lock)."""
        fd = os.open(os.path.join(self.dir, container_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.close(fd)
        os.utime(os.path.join(self.dir, container_id))  # a start run again for the same id joins anew

    def remove(self, container_id: str) -> None:
        """Forget `container_id` (it was deleted); no lock needed: it only makes room."""
        try:
            os.unlink(os.path.join(self.dir, container_id))
        except OSError:
            pass

    def joining(self, grace: float) -> list[str]:
        """Members written by a `start` less than `grace` seconds ago (under the lock)."""
        now = time.time()
        found = []
        for name in self.names():
            try:
                if now - os.stat(os.path.join(self.dir, name)).st_mtime < grace:
                    found.append(name)
            except FileNotFoundError:
                pass
        return found

    def clear(self) -> None:
        """Remove every member (under the lock): their daemon is dead."""
        for name in self.names():
            self.remove(name)

    def dissolve(self) -> None:
        """Remove every member, the directory and the socket (under the lock): the daemon is leaving."""
        self.clear()
        for remove, path in ((os.rmdir, self.dir), (os.unlink, self.socket_path)):
            try:
                remove(path)
            except OSError:
                pass

    def dissolve_if_unserved(self, serves: Callable[[str], bool]) -> None:
        """Dissolve the pool if no member is left and no daemon `serves` its socket (the daemon was
        killed, and `delete` cleans up after it); not while someone holds the lock (a `start`,
        which finds the socket dead itself, or the daemon)."""
        if not self.exists():
            return
        fd = self.lock(wait=False)
        if fd is None:
            return
        try:
            if not self.names() and not serves(self.socket_path):
                self.dissolve()
        finally:
            os.close(fd)
