"""The forker: a plain-Python child made before trio starts, which does all of the daemon's forking.

Forking a process that runs a trio loop (threads, signal wakeup fds, epoll) is unsafe, and a forked
child would inherit the daemon's sockets. So the daemon forks this helper first, while it is still a
single-threaded plain process, and sends it requests over a SOCK_SEQPACKET socketpair: one JSON
message per request or reply, with file descriptors attached (SCM_RIGHTS). The forker runs the
runtime's forking calls (create, exec, start and delete, which run hooks) and the rootfs mounts.
The processes the runtime starts are orphaned to the daemon (a child subreaper), whose reaper owns
every exit. (Logger binaries need no forker: posix_spawn runs no Python in the child.)
"""

import json
import logging
import os
import select
import signal
import socket
from collections.abc import Callable
from typing import Any

import prctl
import trio

# Cheap: the package holds only the errors; `runtime.Container` loads the container module (spec,
# mounts, cgroups) on first use, in the forker, or earlier when a zygote warmed it up.
from railcar import runtime
from railcar.runtime.errors import ContainerNotFound, RuntimeFailure, SpecError

from . import log as shim_log

PROCESS_NAME = "railcar-forker"
WORKER_NAME = "railcar-worker"
_MAX_MESSAGE = 1 << 20
_MAX_FDS = 16
SPARE_IDLE = 2.0  # seconds a spare worker waits for a request before it is retired


class ForkerError(Exception):
    """A forker request failed. `kind` is "spec" (bad config; `path` names the JSON path), "runtime",
    "not_found" or "internal"; `message` is the runtime's own text."""

    def __init__(self, kind: str, message: str, path: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.path = path


Handler = Callable[[dict[str, Any], list[int]], tuple[Any, list[int]]]


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _runtime_error(e: BaseException) -> ForkerError:
    if isinstance(e, SpecError):
        return ForkerError("spec", str(e), e.path)
    if isinstance(e, ContainerNotFound):
        return ForkerError("not_found", str(e))
    if isinstance(e, RuntimeFailure):
        return ForkerError("runtime", str(e))
    return ForkerError("internal", f"{type(e).__name__}: {e}")


def _load(args: dict[str, Any]) -> "runtime.Container":
    """The container a request names by `id` under `root`."""
    return runtime.Container.load(args["id"], root=args["root"])


def create(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Mount the snapshotter's layers (`mounts`) on the bundle's rootfs, then Container.create with
    the process's stdio fds (three, or none in terminal/null mode): one worker for both. A create
    that fails unmounts what it mounted (the daemon's undo unmounts again if this could not)."""
    from railcar.runtime.mounts import mount_layers, unmount_all

    stdio = (fds[0], fds[1], fds[2]) if len(fds) == 3 else None
    target = os.path.join(args["bundle"], "rootfs")
    if args.get("mounts"):
        mount_layers(args["mounts"], target)
    try:
        _, result = runtime.Container.create(args["id"], args["bundle"], root=args["root"], stdio=stdio,
                                             terminal=args["terminal"])
    except BaseException:
        if args.get("mounts"):
            try:
                unmount_all(target)
            except Exception:
                pass
        raise
    return _process_result(result)


def exec_process(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Container.exec of an OCI Process dict; same stdio rules as create."""
    stdio = (fds[0], fds[1], fds[2]) if len(fds) == 3 else None
    container = _load(args)
    result = container.exec(args["process"], stdio=stdio, terminal=args["terminal"])
    return _process_result(result)


def _process_result(result: Any) -> tuple[Any, list[int]]:
    console = getattr(result, "console_fd", None)
    return {"pid": result.pid, "console": console is not None}, ([console] if console is not None else [])


def start(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Container.start (it may run poststart hooks, hence here)."""
    _load(args).start()
    return None, []


def delete(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Container.delete (runs poststop hooks); a container already gone is not an error. With
    `unmount`, that rootfs is unmounted afterwards, whether the delete worked or not: one worker for
    both steps of a task's Delete (and of a failed Create's undo). A failure names both steps."""
    from railcar.runtime.mounts import unmount_all

    failures = []
    try:
        _load(args).delete(force=args.get("force", False))
    except ContainerNotFound:
        pass
    except Exception as e:
        failures.append(e)
    if args.get("unmount"):
        try:
            unmount_all(args["unmount"])
        except Exception as e:
            failures.append(e)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise RuntimeFailure("delete", "; ".join(str(e) for e in failures))
    return None, []


def kill(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Container.kill: the init (or, with all, every process in the container)."""
    _load(args).kill(args["signal"], all=args["all"])
    return None, []


def pause(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Container.pause (freezes the cgroup and records the state)."""
    _load(args).pause()
    return None, []


def resume(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Container.resume."""
    _load(args).resume()
    return None, []


def update(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Container.update with OCI LinuxResources."""
    _load(args).update(args["resources"])
    return None, []


def stderr(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Take the given fd as fd 2: the daemon moved its log to another bundle's FIFO. A spare
    daemon's forker, made before its container was known, also takes the daemon's environment,
    working directory and log settings (`assign`)."""
    os.dup2(fds[0], 2)
    if args.get("assign"):
        _take_assignment(args["assign"])
    return None, []


def _take_assignment(assign: dict[str, Any]) -> None:
    os.environ.clear()
    os.environ.update(assign["env"])
    os.chdir(assign["cwd"])
    shim_log.configure(assign["namespace"], assign["debug"])


def unmount(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Unmount everything stacked on a rootfs."""
    from railcar.runtime.mounts import unmount_all

    unmount_all(args["target"])
    return None, []


HANDLERS: dict[str, Handler] = {
    "create": create,
    "exec": exec_process,
    "start": start,
    "delete": delete,
    "kill": kill,
    "pause": pause,
    "resume": resume,
    "update": update,
    "stderr": stderr,
    "unmount": unmount,
}


def _handle(data: bytes, fds: list[int], handlers: dict[str, Handler]) -> tuple[dict[str, Any], list[int]]:
    """Run one request; the reply (a result or a typed error) and the fds to send with it."""
    _, seq = _peek(data)
    try:
        request = json.loads(data)
        handler = handlers.get(request.get("op"))
        if handler is None:
            raise ForkerError("internal", f"unknown forker op {request.get('op')!r}")
        result, out_fds = handler(request.get("args") or {}, fds)
        return {"seq": seq, "result": result}, out_fds
    except ForkerError as e:
        return _error_reply(seq, e), []
    except Exception as e:  # a request must always be answered: report it instead
        err = _runtime_error(e)
        if err.kind == "internal":  # not a runtime verdict but a bug somewhere: keep the traceback
            logging.getLogger(__name__).exception("forker request %r failed", data[:200])
        return _error_reply(seq, err), []
    finally:
        _close_all(fds)


def _error_reply(seq: Any, e: ForkerError) -> dict[str, Any]:
    return {"seq": seq, "error": {"kind": e.kind, "message": e.message, "path": e.path}}


def _send(sock: socket.socket, reply: dict[str, Any], fds: list[int]) -> bool:
    try:
        socket.send_fds(sock, [json.dumps(reply).encode()], fds)
        return True
    except OSError:
        return False
    finally:
        _close_all(fds)


def _peek(data: bytes) -> tuple[Any, Any]:
    """A request's op and sequence number (None, None if it does not parse: the worker reports it)."""
    try:
        request = json.loads(data)
        return request.get("op"), request.get("seq")
    except (ValueError, AttributeError):
        return None, None


class _Worker:
    """A spare copy of the forker, forked ahead of need, that serves exactly one request and exits.

    Running the runtime's code writes to the pages it touches (reference counts, the interpreter's
    inline caches, new objects in half-full pools), and each written page stops being shared with
    the zygote. A worker's copies die with it, so the long-lived forker stays almost entirely
    shared, however many containers it has made; the fork itself happens while nobody waits.
    The forker's fd 2 (the log) comes with each request, as it may have moved since the fork. A
    spare daemon's assignment (see `stderr`) is passed on to a worker forked before it.
    """

    def __init__(self, daemon: socket.socket, handlers: dict[str, Handler]) -> None:
        self.conn, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                self.conn.close()
                prctl.set_name(WORKER_NAME)
                code = self._serve_one(theirs, daemon, handlers)
            finally:
                os._exit(code)
        theirs.close()

    @staticmethod
    def _serve_one(conn: socket.socket, daemon: socket.socket, handlers: dict[str, Handler]) -> int:
        while True:
            data, fds, _, _ = socket.recv_fds(conn, _MAX_MESSAGE, _MAX_FDS + 1)
            if data and not fds:  # an assignment (a request always brings fd 2)
                _take_assignment(json.loads(data)["assign"])
                continue
            break
        conn.close()
        if not data:
            return 0  # retired unused
        os.dup2(fds[0], 2)
        os.close(fds[0])
        reply, out_fds = _handle(data, fds[1:], handlers)
        return 0 if _send(daemon, reply, out_fds) else 1

    @classmethod
    def fork(cls, daemon: socket.socket, handlers: dict[str, Handler]) -> "_Worker | None":
        """A new worker, or None if the fork failed (memory or process limits): the request that
        needed it is answered with an error, and the forker goes on."""
        try:
            return cls(daemon, handlers)
        except OSError as e:
            logging.getLogger(__name__).warning("cannot fork a forker worker: %s", e)
            return None

    def assign(self, assign: dict[str, Any]) -> bool:
        """Pass on an assignment that came after the fork. The worker takes it at once, while the
        request it is for (the Create) is still on its way, where forking a new worker would hold
        that request up. False if it could not be sent (the worker must not serve then)."""
        try:
            self.conn.send(json.dumps({"assign": assign}).encode())
            return True
        except OSError:
            return False

    def hand_over(self, data: bytes, fds: list[int]) -> bool:
        """Give the worker its request and our fd 2 (the caller still owns `fds`); False if it is
        gone (then it never saw the request)."""
        try:
            socket.send_fds(self.conn, [data], [2, *fds])
            return True
        except OSError:
            return False
        finally:
            self.conn.close()

    def wait(self) -> int:
        """Reap the worker; its exit code (or minus the signal that killed it)."""
        self.conn.close()
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def serve(sock: socket.socket, handlers: dict[str, Handler], spare_idle: float = SPARE_IDLE) -> None:
    """The forker's loop: one request at a time until the daemon closes its end.

    Each request goes to a worker, which answers the daemon itself. One spare is forked when the
    forker starts and a new one once a worker is done (not while it works, when the CPU is better
    spent on the request), so the requests that come in bursts (create then start, a run of execs)
    find one ready. After `spare_idle` seconds without a request the spare is retired, and a
    long-lived container costs no third process (its next request pays for one fork, about 2 ms,
    made before the request's fds are taken in, so the worker holds no second copy of them).
    The forker itself only moves bytes, except for `stderr`, which changes its own fd 2 (and
    passes an assignment on to the spare). When a worker dies without answering, the forker
    answers for it; replies carry the request's sequence number, so the daemon can tell a late one.
    """
    spare = _Worker.fork(sock, handlers)
    served = False  # a spare waits for the first request however long it takes
    try:
        while True:
            if served and spare is not None and not select.select([sock], [], [], spare_idle)[0]:
                spare.wait()
                spare = None
            if spare is None:
                select.select([sock], [], [])
                spare = _Worker.fork(sock, handlers)
            try:
                data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS)
            except OSError:
                return
            if not data:
                _close_all(fds)
                return
            op, seq = _peek(data)
            if op == "stderr":
                reply, out_fds = _handle(data, fds, handlers)
                assign = (json.loads(data).get("args") or {}).get("assign")
                if spare is not None and assign and ("error" in reply or not spare.assign(assign)):
                    spare.wait()  # it has the zygote's environment and cwd: the next request forks anew
                    spare = None
                if not _send(sock, reply, out_fds):
                    return
                continue
            served = True
            try:
                code = _run_in_worker(spare, sock, handlers, data, fds)
            finally:
                _close_all(fds)
            spare = _Worker.fork(sock, handlers)
            if code != 0:
                if code is None:
                    how = "could not be forked"
                elif code < 0:
                    how = f"was killed by signal {-code}"
                else:
                    how = f"exited with status {code}"
                if not _send(sock, _error_reply(seq, ForkerError("internal", f"the forker's worker {how}")), []):
                    return
    finally:
        if spare is not None:
            spare.wait()


def _run_in_worker(spare: _Worker | None, sock: socket.socket, handlers: dict[str, Handler], data: bytes,
                   fds: list[int]) -> int | None:
    """Hand one request to `spare` (or, if that one died idle, to a new worker) and wait for it to
    finish; its exit status (0: it answered), or None if no worker could be forked."""
    code = 1
    for _ in range(2):
        worker = spare or _Worker.fork(sock, handlers)
        spare = None
        if worker is None:
            return None
        handed = worker.hand_over(data, fds)
        code = worker.wait()
        if handed:
            return code
    return code or 1  # never handed over, so never answered


async def receive(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """One message and its fds from a non-blocking socket, inside trio. The fds come close-on-exec:
    one that stays with the daemon (a pty master, a listener) must not leak into what it spawns."""
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, bufsize, maxfds)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        for fd in fds:
            os.set_inheritable(fd, False)
        return data, fds


class Forker:
    """The daemon's handle on the forker process: start it before trio, then `await call(...)`."""

    def __init__(self, handlers: dict[str, Handler] = HANDLERS, spare_idle: float = SPARE_IDLE) -> None:
        self._handlers = handlers
        self._spare_idle = spare_idle
        self._sock: socket.socket | None = None
        self._lock = trio.Lock()
        self._seq = 0
        self.pid = 0

    def start(self, keep_fds: tuple[int, ...] = (0, 1, 2)) -> int:
        """Fork the forker; must run before any thread or event loop exists. Returns its pid.

        The child keeps only `keep_fds` and its end of the socketpair, so it never holds the daemon's
        listening socket or connections.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                ours.close()
                prctl.set_name(PROCESS_NAME)
                # SIGPIPE stays ignored (as in the daemon): a write to a helper that died must be an
                # error the request reports, not the death of the forker. The runtime resets every
                # signal to its default before the container's execve.
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                keep = set(keep_fds) | {theirs.fileno()}
                for name in os.listdir("/proc/self/fd"):
                    fd = int(name)
                    if fd not in keep:
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                serve(theirs, self._handlers, self._spare_idle)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self.pid = pid
        return pid

    async def _roundtrip(self, message: bytes, seq: int, fds: list[int]) -> tuple[Any, list[int]]:
        sock = self._sock
        assert sock is not None, "Forker.start() was not called"
        try:
            while True:
                try:
                    socket.send_fds(sock, [message], fds)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
            while True:
                data, out_fds = await receive(sock, _MAX_MESSAGE, _MAX_FDS)
                if not data:
                    raise ForkerError("internal", "the forker process is gone")
                reply = json.loads(data)
                if reply.get("seq") == seq:
                    return reply, out_fds
                _close_all(out_fds)  # a late answer to an earlier request (its worker died after it)
        except OSError as e:
            raise ForkerError("internal", f"the forker process is gone: {e}") from None

    async def call(self, op: str, args: dict[str, Any], fds: tuple[int, ...] | list[int] = ()) -> tuple[Any, list[int]]:
        """Run `op` in the forker; returns (result, received fds). Raises ForkerError on failure.

        Requests are serialised, and a call is never abandoned half-way (the reply must be read to keep
        the stream in step), so cancellation takes effect only after the reply arrived.
        """
        self._seq += 1
        seq = self._seq
        message = json.dumps({"op": op, "seq": seq, "args": args}).encode()
        async with self._lock:
            with trio.CancelScope(shield=True):
                reply, out_fds = await self._roundtrip(message, seq, list(fds))
        error = reply.get("error")
        if error:
            _close_all(out_fds)
            raise ForkerError(error["kind"], error["message"], error.get("path", ""))
        return reply["result"], out_fds

    def close(self) -> None:
        """Close our end; the forker sees EOF and exits (the reaper collects it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
