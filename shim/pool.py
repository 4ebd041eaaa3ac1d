"""Pools: containers that name no group of their own share a daemon, up to `size()` of them.

A daemon is a Python process, and the part of it no other process shares stays about 7 MiB
however little it does; a container it serves adds about 60 KiB. containerd's Go shim costs about
3.4 MiB per container, or per pod. So by default a container whose config.json names no group
annotation joins a pool: group `railcar-pool-<code>-<k>` of its containerd address and namespace
(`<code>`: `paths.spawn_identity()`, this copy of railcar's code and the mounts, cgroups and
limits of `start`), the first such pool with room. The containers of a pool
have no more in common than that. A pod's containers join the pool of its sandbox container,
whatever that pool's size, so that a pod is served by one daemon, as with containerd's runc shim
(see `bootstrap._join_pod`), while that daemon runs this copy of the code. A container
that names a group of its own (`io.containerd.railcar.v2.group`) keeps a daemon of its own.
`RAILCAR_POOL_SIZE` in containerd's environment sets how many containers one daemon takes (1: a
daemon for each container, and for each pod, as runc's shim does): a pooled daemon that dies takes
the control of all its containers with it, as a pod's shim does.

A pool's members are files named after their container ids, in a directory named after the pool's
socket under MEMBERS_ROOT, each holding the CLOCK_BOOTTIME of its join (the wall clock can step);
CODE_FILE there names the code its daemon runs.
`start` writes a member before it prints the pool's address; the daemon removes it at Delete, and
`delete` after a daemon died. A daemon leaves its pool (removes its socket, the members and their
directory) before it stops serving, and on Shutdown only when no member remains that a `start`
wrote in the last grace period: that container's Create is on its way to this daemon. Everything
that reads or changes a pool holds the directory's lock (flock), so `start` never hands out the
address of a daemon that is going away, and a daemon that is going away never touches a pool that
a newer daemon took over (its socket is another file then). This module imports only what `start`
and `delete` already import.
"""

import fcntl
import os
import time
from _collections_abc import Callable  # loaded at startup; collections.abc costs ~2 ms a `start`
from _socket import AF_UNIX, SOCK_CLOEXEC, SOCK_STREAM, socket

from . import paths, wire

POOL_ENV = "RAILCAR_POOL_SIZE"
DEFAULT_SIZE = 16
MEMBERS_ROOT = "/run/railcar/.pools"  # a containerd namespace name cannot start with a dot
GROUP_PREFIX = "railcar-pool-"
MARKER_FILE = "railcar-pool"  # in a pooled container's bundle, for `delete`
CODE_FILE = ".code"  # in a pool's member directory (no container id starts with a dot)
LOCK_WAIT = 2.0  # seconds `delete` waits for a pool's lock (containerd gives it 5 s in all)
CONNECT_TIMEOUT = 0.1  # as containerd's own shims probe a socket
ANSWER_TIMEOUT = 2.0  # seconds a daemon may take to answer (slow is not wedged) before a container goes elsewhere
# Seconds from the bind of a daemon's socket before it must answer (see `probe`): the `start` that
# made it holds the pool's lock while a cold zygote or daemon imports for a second or more, and
# the `start`s of the same burst must wait for it, not each make a daemon of their own.
ANSWER_AFTER = 30.0
# A request for a service no daemon has: the answer (UNIMPLEMENTED) runs no handler and logs nothing.
_ANSWER_PROBE = wire.ttrpc_request(1, "railcar.v1.Probe", "Answer")
_POLL = 0.01


def size() -> int:
    """Containers per pooled daemon, from RAILCAR_POOL_SIZE; 1 or less turns pooling off."""
    try:
        return int(os.environ.get(POOL_ENV, DEFAULT_SIZE))
    except ValueError:
        return DEFAULT_SIZE


def group(index: int) -> str:
    """The group (the socket's name) of pool `index` of this copy of railcar's code, for a `start`
    with these mounts, cgroups and limits: after an upgrade, or a containerd restarted with other
    limits, new containers fill new pools of new daemons (see `paths.spawn_identity`). No group
    annotation may use this prefix."""
    return f"{GROUP_PREFIX}{paths.spawn_identity()}-{index}"


def poolable(container_id: str) -> bool:
    """Whether `container_id` can name a member file (containerd's ids always can)."""
    return bool(container_id) and "/" not in container_id and not container_id.startswith(".")


def _now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def probe(path: str, kind: int = SOCK_STREAM, *, answer: bool = False) -> str:
    """"live" if a daemon accepts on `path` (a connect within 100 ms, as containerd's own shims
    check), "dead" if none can (no socket, or refused), "busy" if the connect timed out or the
    backlog is full: a daemon that is there but slow, not a dead one.

    The kernel completes a connect on its own, into the listener's backlog, for a process that is
    stopped or wedged too. So, with `answer`, a ttrpc daemon must also answer a request within
    ANSWER_TIMEOUT to be "live" ("busy" if not), once its socket is ANSWER_AFTER old: a `start`
    that is to hand a new container to a pool's daemon asks, as containerd would hang on one that
    does not answer (its own containers wait for it as they would for runc's shim)."""
    conn = socket(AF_UNIX, kind | SOCK_CLOEXEC)
    conn.settimeout(CONNECT_TIMEOUT)
    try:
        conn.connect(path)
        if answer and time.time() - os.stat(path).st_mtime > ANSWER_AFTER:
            conn.settimeout(ANSWER_TIMEOUT)
            conn.sendall(_ANSWER_PROBE)
            if not conn.recv(1):  # closed without an answer
                return "busy"
        return "live"
    except (FileNotFoundError, ConnectionRefusedError):
        return "dead"
    except OSError:  # (TimeoutError: no room in the backlog, or no answer)
        return "busy"
    finally:
        conn.close()


class Members:
    """The member files of the pool served on `socket_path`.

    `ours` is the identity (`paths.socket_id`) of the socket file its daemon was given: a daemon
    only ever dissolves the pool while that file is still (or no longer any) socket on the path."""

    def __init__(self, socket_path: str, ours: str | None = None) -> None:
        self.socket_path = socket_path
        self.dir = os.path.join(MEMBERS_ROOT, os.path.basename(socket_path))
        self.ours = ours

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

    def lock_existing(self, timeout: float) -> int | None:
        """The lock of a pool that exists, waiting at most `timeout` seconds; None if there is no
        pool (any more) or the lock stayed busy."""
        deadline = time.monotonic() + timeout
        while self.exists():
            fd = self.lock(wait=False)
            if fd is not None:
                return fd
            if time.monotonic() > deadline:
                return None
            time.sleep(_POLL)
        return None

    def has(self, container_id: str) -> bool:
        return os.path.exists(os.path.join(self.dir, container_id))

    def names(self) -> list[str]:
        try:
            return [name for name in os.listdir(self.dir) if name != CODE_FILE]
        except FileNotFoundError:
            return []

    def code(self) -> str | None:
        """The `paths.code_identity` of the code the pool's daemon runs (None: a railcar from before
        pools recorded it)."""
        try:
            with open(os.path.join(self.dir, CODE_FILE)) as f:
                return f.read()
        except OSError:
            return None

    def record_code(self) -> None:
        """Record that this code runs the pool's daemon (under the lock, as `start` makes one)."""
        with open(os.path.join(self.dir, CODE_FILE), "w") as f:
            f.write(paths.code_identity())

    def add(self, container_id: str) -> None:
        """Record `container_id` as a member joining now (under the lock)."""
        fd = os.open(os.path.join(self.dir, container_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, repr(_now()).encode())
        finally:
            os.close(fd)

    def remove(self, container_id: str) -> None:
        """Forget `container_id` (it was deleted); it only makes room, so the lock is not needed."""
        try:
            os.unlink(os.path.join(self.dir, container_id))
        except OSError:
            pass

    def joining(self, grace: float, served: Callable[[str], bool] = lambda name: False) -> list[str]:
        """Members not `served` yet that a `start` wrote less than `grace` seconds ago (under the lock)."""
        now = _now()
        found = []
        for name in self.names():
            if served(name):
                continue
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    joined = float(f.read() or 0)
            except (OSError, ValueError):
                continue
            if now - joined < grace:
                found.append(name)
        return found

    def prune(self, grace: float, served: Callable[[str], bool]) -> bool:
        """Remove the members neither `served` nor joining (their `start` was killed, or containerd
        never sent their Create): each would hold a place for good. Skipped while the lock is busy;
        False if the pool is no longer this daemon's (see `is_ours`)."""
        if not self.exists():
            return self.is_ours()
        fd = self.lock(wait=False)
        if fd is None:
            return True
        try:
            if not self.is_ours():
                return False
            keep = set(self.joining(grace, served))
            for name in self.names():
                if name not in keep and not served(name):
                    self.remove(name)
            return True
        finally:
            os.close(fd)

    def is_ours(self) -> bool:
        """Whether no other daemon's socket sits on the path (ours, or none at all: a newer daemon
        binds its socket before it takes members)."""
        current = paths.socket_id(self.socket_path)
        return current is None or self.ours is None or current == self.ours

    def dissolve(self) -> None:
        """Remove every member, the directory and the socket (under the lock): the daemon is gone
        or going. Nothing, if a newer daemon took the pool over."""
        if not self.is_ours():
            return
        for name in (*self.names(), CODE_FILE):
            self.remove(name)
        # the socket first: one left without its directory could not be found by `delete`
        for remove, path in ((os.unlink, self.socket_path), (os.rmdir, self.dir)):
            try:
                remove(path)
            except OSError:
                pass

    def depart(self, container_id: str) -> None:
        """`delete`'s part: remove `container_id`, and dissolve the pool if its daemon is dead (it
        was killed): the members left were that daemon's, as no `start` is half-way through joining
        while the lock is held. Under the lock, which a `delete` waits for: after a pooled daemon
        died, containerd runs one for every member at once."""
        fd = self.lock_existing(LOCK_WAIT)
        if fd is None:
            self.remove(container_id)
            return
        try:
            self.remove(container_id)
            if probe(self.socket_path) == "dead":
                self.dissolve()
        finally:
            os.close(fd)
