"""Typed, intent-named messages between the caller and its forked helpers.

Stages talk over a SOCK_SEQPACKET socketpair: one datagram per message, JSON with a ``kind`` tag,
file descriptors (a pty master) riding along with SCM_RIGHTS. Receiving an unexpected kind is a
protocol error, and a peer that dies without a word shows up as ``PeerGone`` — so the caller
never hangs on a helper that crashed.
"""

import json
import os
import socket
from dataclasses import asdict, dataclass, fields

from .errors import RuntimeFailure, shorten


@dataclass(frozen=True)
class MapIds:
    """Intermediate → caller: I made a user namespace; write uid_map/gid_map for ``pid``."""
    pid: int


@dataclass(frozen=True)
class IdsMapped:
    """Caller → intermediate: the id maps are written, go on."""


@dataclass(frozen=True)
class InitForked:
    """Intermediate → caller: the container init is ``pid`` (in the caller's pid namespace)."""
    pid: int


@dataclass(frozen=True)
class RootfsReady:
    """Init → caller: the spec's mounts are up (not yet pivoted). runtime-spec runs the prestart
    and createRuntime hooks now: after the environment exists, before pivot_root."""


@dataclass(frozen=True)
class HooksDone:
    """Caller → init: prestart/createRuntime hooks ran; finish the rootfs (createContainer
    hooks, pivot_root). ``pid`` is the init's, as in-container hooks see it in their state (the
    rest of the state comes with the fork: annotations can be larger than a datagram)."""
    pid: int


@dataclass(frozen=True)
class Console:
    """Init or exec process → caller: the pty master rides along. Sent as soon as the pty exists,
    before any seccomp filter goes in (runc's init sends its console that early too): a profile
    that refuses sendmsg must not keep a terminal from reaching the caller."""


@dataclass(frozen=True)
class Parked:
    """Init → caller: all set up, blocked before execve."""


@dataclass(frozen=True)
class SeccompListener:
    """Init or exec process → caller: my seccomp filter notifies; its listener fd rides along,
    for the agent at linux.seccomp.listenerPath. I wait for ListenerPassed."""


@dataclass(frozen=True)
class ListenerPassed:
    """Caller → init or exec process: the agent has your listener; go on."""


@dataclass(frozen=True)
class ExecForked:
    """Exec intermediate → caller: the exec process is ``pid``, ``joined`` to the container's v2
    cgroup already if it was forked into it; EOF follows once it execve'd."""
    pid: int
    joined: bool


@dataclass(frozen=True)
class MountSource:
    """Init → caller: make the idmapped bind of spec.mounts[index], from our mount namespace as it is now."""
    index: int


@dataclass(frozen=True)
class MountTree:
    """Caller → init: that bind, as a detached mount (the fd comes with it)."""


@dataclass(frozen=True)
class Joined:
    """Caller → exec intermediate: the exec process is in the container's cgroup; let it go on."""


@dataclass(frozen=True)
class Failed:
    """Any helper → caller: ``stage`` failed with ``cause``; the helper exits right after."""
    stage: str
    cause: str


MESSAGES = {cls.__name__: cls for cls in (MapIds, IdsMapped, InitForked, RootfsReady, HooksDone, Console, Parked,
                                           SeccompListener, ListenerPassed, ExecForked, Joined, MountSource, MountTree,
                                           Failed)}
_MAX = 65536
# The messages without fields, encoded once (json.dumps and asdict in a forked helper write to many
# pages it shares with its parent: each a page fault charged to the container's cgroup).
_FIELDLESS = {cls: json.dumps({"kind": cls.__name__}).encode() for cls in MESSAGES.values() if not fields(cls)}


class PeerGone(RuntimeFailure):
    """The other end closed without sending the expected message."""


class PeerReset(PeerGone):
    """The other end died with a message of ours unread (ECONNRESET): not a clean close."""


class Channel:
    """One end of a helper socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @staticmethod
    def pair() -> tuple["Channel", "Channel"]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return Channel(a), Channel(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send(self, msg: object, fds: list[int] | tuple[int, ...] = ()) -> None:
        if isinstance(msg, Failed):  # (one message, of at most _MAX bytes, even in JSON's escapes)
            msg = Failed(msg.stage, shorten(msg.cause))
        data = _FIELDLESS.get(type(msg))
        if data is None:
            data = json.dumps({"kind": type(msg).__name__, **asdict(msg)}).encode()
        try:
            if fds:
                socket.send_fds(self.sock, [data], list(fds))
            else:
                # write(2), not send(2): a process may report after its seccomp filter went in (without
                # no_new_privs it goes in before the user switch), and a profile made for runc allows
                # the write runc reports with, not necessarily sendto.
                os.write(self.sock.fileno(), data)
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone("helper", f"the helper died before it got {type(msg).__name__}") from None

    def recv(self, stage: str, *expected: type) -> tuple[object, list[int]]:
        """Receive one message of one of the ``expected`` kinds (or ``Failed``, raised)."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, _MAX, 4, socket.MSG_CMSG_CLOEXEC)
        except ConnectionResetError:
            raise PeerReset(stage, "helper died without reporting") from None
        if not data:
            raise PeerGone(stage, "helper exited without reporting")
        try:
            doc = json.loads(data)
            cls = MESSAGES.get(doc.pop("kind", None))
            if cls is None or set(doc) != {f.name for f in fields(cls)}:
                raise RuntimeFailure(stage, f"malformed helper message {data[:200]!r}")
            msg = cls(**doc)
            if isinstance(msg, Failed):
                raise RuntimeFailure(msg.stage, msg.cause)
            if not isinstance(msg, expected):
                raise RuntimeFailure(stage, f"helper sent {cls.__name__}, expected "
                                            f"{' or '.join(c.__name__ for c in expected) or 'nothing'}")
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return msg, fds

    def wait_closed(self, stage: str) -> None:
        """Expect the peer to close without a word (it execve'd): a ``Failed`` is raised, and so
        is any other message (``recv`` expects none)."""
        try:
            self.recv(stage)
        except PeerReset:
            raise
        except PeerGone:
            return
