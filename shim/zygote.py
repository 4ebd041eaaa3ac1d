"""A warm per-node zygote that forks ready shim daemons, so containers do not pay Python's imports.

A fresh daemon spends most of a second importing trio, protobuf and the runtime before it can
answer containerd's Create. The zygote pays that once: it imports everything the daemon needs,
freezes the heap (copy-on-write stays shared), and for each `start` forks a child that becomes the
daemon with the listener `start` passed over SCM_RIGHTS. The zygote never runs trio or threads, so
forking it is safe. Requests and replies are `marshal`-encoded (`start` cannot afford json's
imports) and accepted only from our own uid. `start` falls back to spawning a daemon directly (and
a zygote for next time) whenever no zygote answers; the zygote exits after an idle period.

Run as `python -m railcar.shim.zygote`; the socket name is tied to this interpreter and checkout.
"""

import gc
import marshal
import os
import signal
import socket
import struct
import sys

from railcar.runtime.sealing import reexec_sealed

from . import paths
from .flags import FlagError, parse

IDLE_ENV = "RAILCAR_ZYGOTE_IDLE"
DEFAULT_IDLE = 600.0
_UCRED = struct.Struct("3i")


def _idle_timeout() -> float:
    try:
        return float(os.environ.get(IDLE_ENV, DEFAULT_IDLE))
    except ValueError:
        return DEFAULT_IDLE


def _listen(path: str) -> socket.socket | None:
    """Bind the zygote socket; None if a live zygote already has it (a stale file is replaced)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
    except OSError:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
            sock.close()
            return None
        except OSError:
            os.unlink(path)
            sock.bind(path)
        finally:
            probe.close()
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


def _become_daemon(request: dict, listener_fd: int) -> int:
    """In the forked child: take the shape `start` would have given a spawned daemon, then run it."""
    from .daemon import run

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setpgid(0, 0)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.dup2(listener_fd, 3)
    for fd in {devnull, listener_fd} - {0, 1, 2, 3}:
        os.close(fd)
    return run(parse(request["flags"]))


def _serve_one(server: socket.socket, conn: socket.socket) -> None:
    """Fork a daemon for one `start` request and answer with its pid (or an error)."""
    fds: list[int] = []
    try:
        pid_uid_gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        if pid_uid_gid[1] != os.geteuid():
            return
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 1)
        request = marshal.loads(data)  # the peer is our own uid (checked above): as trusted as we are
        if not isinstance(request, dict):
            raise ValueError("a start request is a dict")
        parse(request["flags"])  # refuse bad flags here, not in a child nobody watches
        if len(fds) != 1:
            raise ValueError("a start request carries exactly one listener fd")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                server.close()
                conn.close()
                code = _become_daemon(request, fds[0])
            finally:
                os._exit(code)
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


def _warm_up() -> None:
    """Import what a daemon needs before its first request arrives."""
    import railcar.io  # noqa: F401
    import railcar.runtime.container  # noqa: F401

    from . import daemon, forker, service  # noqa: F401


def main() -> int:
    """Serve fork requests until idle for the idle timeout."""
    reexec_sealed()  # every daemon and forker forked from here shares the sealed interpreter (CVE-2019-5736)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked daemons are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # still remove the socket
    path = paths.zygote_socket()
    server = _listen(path)
    if server is None:
        return 0
    try:
        import prctl

        prctl.set_name("railcar-zygote")
        _warm_up()
        gc.freeze()
        server.settimeout(_idle_timeout())
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return 0
            conn.settimeout(5)
            _serve_one(server, conn)
    finally:
        server.close()
        try:
            os.unlink(path)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
