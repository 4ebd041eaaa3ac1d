"""A warm per-node zygote that forks ready shim daemons, so containers do not pay Python's imports.

A fresh daemon spends most of a second importing trio, protobuf and the runtime before it can
answer containerd's Create. The zygote pays that once: it imports everything the daemon needs and
freezes the heap (copy-on-write stays shared). It keeps one spare daemon forked ahead of need (its
forker made; trio starts once it is assigned, so that a spare waiting for its container writes to
few pages: `daemon.run_spare`); each `start` is passed on to the spare, with the
listener `start` sent over SCM_RIGHTS, and a new spare is forked for the next one. The zygote runs
no thread, and trio only in its warm-up, which leaves nothing running or open: forking it is safe.
Requests and replies are `marshal`-encoded (`start` cannot afford json's imports) and accepted only
from our own uid. When no zygote answers, `start` spawns one (one for a burst of starts) and waits
for it: the socket appears only once the zygote has imported everything, warmed up and tried to
fork its first spare. `start` spawns a daemon directly only if no
zygote is ready within a few seconds. The zygote exits after an idle period.

Run as `python -m railcar.shim.zygote`; the socket name is tied to this interpreter and checkout, and
to the mount namespace, cgroups and resource limits of the `start` that spawned it (`paths.spawn_identity`).
"""

import gc
import marshal
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable

from railcar.runtime.sealing import reexec_sealed

from . import fdlimit, paths
from .bootstrap import zygote_accepts
from .flags import FlagError, parse

IDLE_ENV = "RAILCAR_ZYGOTE_IDLE"
DEFAULT_IDLE = 600.0
SPARE_DELAY = 0.1  # seconds without a `start` before a used spare is replaced
WARM_UP_ROUNDS = 10
_UCRED = struct.Struct("3i")


def _idle_timeout() -> float:
    try:
        return float(os.environ.get(IDLE_ENV, DEFAULT_IDLE))
    except ValueError:
        return DEFAULT_IDLE


class _Server:
    """The zygote's listening socket, published at `path` only once it listens, and so ready."""

    def __init__(self, sock: socket.socket, path: str, inode: int) -> None:
        self.sock, self.path, self.inode = sock, path, inode

    @classmethod
    def publish(cls, path: str) -> "_Server | None":
        """Listen on a private name, then hard-link it to `path` (atomic: a connect to `path`
        never finds a socket that does not listen yet). None if a live zygote has `path`; a
        stale file there is replaced."""
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        private = f"{path}.{os.getpid()}"
        _unlink(private)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.bind(private)
            os.chmod(private, 0o600)
            sock.listen(64)
            inode = os.stat(private).st_ino
            for _ in range(2):
                try:
                    os.link(private, path)
                    return cls(sock, path, inode)
                except FileExistsError:
                    if zygote_accepts(path):
                        break
                    _unlink(path)  # left by a zygote that was killed
        finally:
            _unlink(private)
        sock.close()
        return None

    def close(self) -> None:
        """Stop listening and remove `path`, unless it is another zygote's by now."""
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _Spare:
    """The zygote's end of a spare daemon (see `daemon.run_spare`)."""

    def __init__(self) -> None:
        from railcar.runtime.syscalls import bare_fork  # (loaded by `_load`; at the top, also before the re-exec)

        self.conn, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = bare_fork()
        if self.pid == 0:
            code = 1
            try:
                code = self._become_spare(theirs)
            finally:
                os._exit(code)
        theirs.close()

    @staticmethod
    def _become_spare(conn: socket.socket) -> int:
        """In the forked child: the shape `start` gives a spawned daemon, then wait for a container.

        Only stdio and `conn` stay open: not the zygote's socket, nor a connection or listener of a
        `start` being served."""
        from .daemon import run_spare

        for name in os.listdir("/proc/self/fd"):
            if int(name) > 2 and int(name) != conn.fileno():
                try:
                    os.close(int(name))
                except OSError:
                    pass
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setpgid(0, 0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if devnull > 2:
            os.close(devnull)
        return run_spare(conn)

    def assign(self, request: bytes, listener_fd: int) -> bool:
        """Pass a checked `start` request on; False if the spare is gone. Either way it is used up."""
        try:
            socket.send_fds(self.conn, [request], [listener_fd])
            return True
        except OSError:
            return False
        finally:
            self.conn.close()

    def retire(self) -> None:
        self.conn.close()  # the spare sees EOF and exits; SIGCHLD is ignored, so no zombie

    @classmethod
    def fork(cls) -> "_Spare | None":
        """A new spare, or None if the fork failed (memory or process limits): tried again later."""
        try:
            return cls()
        except OSError:
            return None


def _serve_one(conn: socket.socket, spare: _Spare | None) -> _Spare | None:
    """Pass one `start` request to the spare (forked now if there is none) and answer with its pid
    (or an error); returns the spare if it was not used."""
    fds: list[int] = []
    try:
        pid_uid_gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 1)  # read even to refuse: else the peer sees a reset
        if pid_uid_gid[1] != os.geteuid():
            conn.send(marshal.dumps({"error": "a start request from another user"}))
            return spare
        request = marshal.loads(data)  # the peer is our own uid (checked above): as trusted as we are
        if not isinstance(request, dict):
            raise ValueError("a start request is a dict")
        parse(request["flags"])  # refuse bad flags here, not in a child nobody watches
        if not isinstance(request["env"], dict) or not isinstance(request["cwd"], str):
            raise ValueError("a start request has an env dict and a cwd")
        if len(fds) != 1:
            raise ValueError("a start request carries exactly one listener fd")
        spare = spare or _Spare()
        assigned, pid, spare = spare.assign(data, fds[0]), spare.pid, None
        if not assigned:  # the spare died (killed by hand?): a new one takes it
            spare = _Spare()
            assigned, pid, spare = spare.assign(data, fds[0]), spare.pid, None
        if not assigned:
            raise OSError("no spare daemon took the request")
        conn.send(marshal.dumps({"pid": pid}))
    except (OSError, ValueError, EOFError, TypeError, KeyError, FlagError) as e:
        try:
            conn.send(marshal.dumps({"error": str(e)}))
        except OSError:
            pass
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()
    return spare


def _load() -> None:
    """Import what a daemon needs before its first request arrives."""
    from .deferred import defer_unused

    defer_unused()
    import trio  # noqa: F401

    import railcar.io  # noqa: F401

    from . import daemon, forker, service  # noqa: F401
    forker.preload()


def _warm_up() -> None:
    """Run a daemon's hottest path (a trio loop serving ttrpc calls, events encoded) a few times.
    The interpreter's one-time writes (lazy set-up, specialised bytecode) then happen here, once, in
    pages every later daemon shares: each keeps about 0.5 MiB less of private memory (6.5 against
    7.0 MiB, measured). It comes before the first spare, although the first `start` then waits ~80 ms
    longer for the zygote: a daemon forked before it keeps the pages it wrote shared with its forker
    only, and both end up with their own copies (the forker 4.9 against 1.5 MiB of private memory,
    measured), for as long as that daemon runs; with pools, that is the first pool's daemon."""
    import trio

    # A SIGTERM meanwhile waits until this is done: raised inside trio, the handler's SystemExit
    # would come out as an exception group (and a traceback) instead of a clean exit.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        for _ in range(WARM_UP_ROUNDS):
            trio.run(_exercise)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


async def _exercise() -> None:
    """One trio loop with a ttrpc server and client on a socketpair: calls, replies, an event."""
    import trio

    from railcar.ttrpc_proto.api import events_task_pb2, task_v2_pb2
    from railcar.ttrpc_proto.client import open_client
    from railcar.ttrpc_proto.server import Server

    from .events import envelope

    async def state(request: task_v2_pb2.StateRequest, ctx: object) -> task_v2_pb2.StateResponse:
        return task_v2_pb2.StateResponse(id=request.id, pid=1, bundle="/bundle", stdout="/stdout")

    ours, theirs = socket.socketpair()
    server = Server()
    server.register("containerd.task.v2.Task", {"State": (task_v2_pb2.StateRequest, state)})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_connection, trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        async with open_client(trio.SocketStream(trio.socket.from_stdlib_socket(theirs))) as client:
            for _ in range(16):
                await client.call("containerd.task.v2.Task", "State", task_v2_pb2.StateRequest(id="warm-up"),
                                  task_v2_pb2.StateResponse)
                envelope("warm-up", events_task_pb2.TaskExit(container_id="warm-up", pid=1)).SerializeToString()
        nursery.cancel_scope.cancel()


def _sigterm_handler(zygote: int) -> Callable[[int, object], None]:
    """SIGTERM ends the zygote through main's `finally`, which removes its socket. A child forked a
    moment ago may still have this handler: it just dies, and leaves the live zygote's socket alone."""

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != zygote:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)  # dies of it, as without the handler
            os._exit(128 + signal.SIGTERM)
        sys.exit(0)

    return handler


def main() -> int:
    """Serve fork requests until idle for the idle timeout."""
    reexec_sealed()  # every daemon and forker forked from here shares the sealed interpreter (CVE-2019-5736)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked daemons are reaped by the kernel
    signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    path = paths.zygote_socket()
    if zygote_accepts(path):
        return 0
    import prctl

    prctl.set_name("railcar-zygote")
    _load()
    from .daemon import debug_signals

    debug_signals()
    fdlimit.raise_soft()   # every daemon forked from here serves with it
    try:
        _warm_up()
    except Exception:  # only an optimisation: serve on without it
        pass
    gc.freeze()
    spare = _Spare.fork()
    server = _Server.publish(path)  # a `start` that spawned this zygote waits for this
    if server is None:  # another zygote got ready first
        if spare is not None:
            spare.retire()
        return 0
    try:
        while True:
            # A used spare is replaced once no `start` came for SPARE_DELAY: forking it at once
            # would take CPU from the container being created right then.
            server.sock.settimeout(_idle_timeout() if spare else SPARE_DELAY)
            try:
                conn, _ = server.sock.accept()
            except TimeoutError:
                conn = None
            if conn is None:  # (forked outside the except block: a spare would live inside its context)
                if spare:
                    return 0
                spare = _Spare.fork()
                if spare is None:
                    return 0  # cannot fork now: `start` spawns daemons (and a new zygote) itself
                continue
            conn.settimeout(5)
            spare = _serve_one(conn, spare)
    finally:
        if spare is not None:
            spare.retire()
        server.close()


if __name__ == "__main__":
    sys.exit(main())
