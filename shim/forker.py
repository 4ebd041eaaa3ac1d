"""The forker: a plain-Python child made before trio starts, which does all of the daemon's forking.

Forking a process that runs a trio loop (threads, signal wakeup fds, epoll) is unsafe, and a forked
child would inherit the daemon's sockets. So the daemon forks this helper first, while it is still a
single-threaded plain process, and sends requests over a SOCK_SEQPACKET socketpair: one JSON
message per request or reply, with file descriptors attached (SCM_RIGHTS). Each request is taken
and served by a one-shot worker, a copy of the forker forked ahead of need (see `serve`), which
runs the runtime's forking calls (create, exec, start and delete, which run hooks) and the rootfs
mounts.
The processes the runtime starts are orphaned to the daemon (a child subreaper), whose reaper owns
every exit. (Logger binaries need no forker: posix_spawn runs no Python in the child.)
"""

import json
import logging
import mmap
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import prctl
import trio

# Cheap: the package holds only the errors; `runtime.Container` loads the container module (spec,
# mounts, cgroups) on first use, in the forker, or earlier when a zygote warmed it up.
from railcar import runtime
from railcar.runtime.errors import ContainerNotFound, RuntimeFailure, SpecError
from railcar.runtime.syscalls import bare_fork

from . import log as shim_log

PROCESS_NAME = "railcar-forker"
WORKER_NAME = "railcar-worker"
_MAX_MESSAGE = 1 << 20
_SO_SNDBUFFORCE = 32  # linux/asm-generic/socket.h (Python's socket module lacks it): root may pass wmem_max
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
    "unmount": unmount,
}


def _handle(seq: int, body: bytes, fds: list[int], handlers: dict[str, Handler],
            context: bytes = b"") -> tuple[dict[str, Any], list[int]]:
    """Run request `seq` (its JSON `body`), after taking on the daemon's `context` (JSON) if it has
    one; the reply (a result or a typed error) and the fds to send with it."""
    try:
        if context:
            _adopt(json.loads(context))
        request = json.loads(body)
        handler = handlers.get(request.get("op"))
        logging.getLogger(__name__).debug("forker request %d: %s", seq, request.get("op"))
        if handler is None:
            raise ForkerError("internal", f"unknown forker op {request.get('op')!r}")
        result, out_fds = handler(request.get("args") or {}, fds)
        return {"seq": seq, "result": result}, out_fds
    except ForkerError as e:
        return _error_reply(seq, e), []
    except Exception as e:  # a request must always be answered: report it instead
        err = _runtime_error(e)
        if err.kind == "internal":  # not a runtime verdict but a bug somewhere: keep the traceback
            logging.getLogger(__name__).exception("forker request %r failed", body[:200])
        return _error_reply(seq, err), []
    finally:
        _close_all(fds)


def _error_reply(seq: int, e: ForkerError) -> dict[str, Any]:
    return {"seq": seq, "error": {"kind": e.kind, "message": e.message, "path": e.path}}


def _send(sock: socket.socket, reply: dict[str, Any], fds: list[int]) -> bool:
    try:
        socket.send_fds(sock, [json.dumps(reply).encode()], fds)
        return True
    except OSError:
        return False
    finally:
        _close_all(fds)


def _adopt(context: dict[str, Any]) -> None:
    """Take the daemon's environment, working directory and log settings: a spare daemon's forker
    was forked before its container was known (see `Forker.adopt`). If that directory is gone (the
    bundle of a grouped daemon's first container), the worker works in /."""
    os.environ.clear()
    os.environ.update(context["env"])
    shim_log.configure(context["namespace"], context["debug"])
    try:
        os.chdir(context["cwd"])
    except OSError:
        os.chdir("/")


# A request is its sequence number (8 bytes, so that a worker can note it without taking the
# request off the socket) and then JSON; a reply is JSON with the number in it.
_SEQ = struct.Struct("<q")
# The pages the daemon shares with its forker and every worker (MAP_SHARED, mapped before the
# forker's fork): the number of the request a worker is taking, then the daemon's context (see
# `Forker.adopt`): its length and its JSON. Pages never written cost nothing.
_TAKEN_AT, _CONTEXT_AT = 0, _SEQ.size
_CONTEXT_SPACE = 1 << 20  # the environment came in one SEQPACKET message (~208 KiB by default); JSON can grow it
_RETIRED = 3  # a worker's exit status: it waited `idle` seconds and no request came
_CLOSED = 4  # a worker's exit status: the daemon closed its end


def _work(sock: socket.socket, handlers: dict[str, Handler], shared: mmap.mmap, idle: float | None) -> int:
    """A forked worker's life: wait for one request on the forker's socket (at most `idle` seconds,
    if given), note its number in `shared` before taking it, serve it with the daemon's fd 2 (the
    message's first fd) and context, and answer the daemon directly. Returns the exit status."""
    prctl.set_name(WORKER_NAME)
    if idle is not None and not select.select([sock], [], [], idle)[0]:
        return _RETIRED
    head = sock.recv(_SEQ.size, socket.MSG_PEEK)  # (an error: exit 1, nothing taken)
    if not head:
        return _CLOSED
    (seq,) = _SEQ.unpack(head)
    _SEQ.pack_into(shared, _TAKEN_AT, seq)
    data, fds, flags, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS + 1)
    if fds:  # the daemon's fd 2 comes first
        os.dup2(fds[0], 2)
        os.close(fds[0])
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        _close_all(fds[1:])
        reply, out_fds = _error_reply(seq, ForkerError("internal", "a forker request over the size or fd limit")), []
    else:
        (length,) = _SEQ.unpack_from(shared, _CONTEXT_AT)
        context = shared[_CONTEXT_AT + _SEQ.size:_CONTEXT_AT + _SEQ.size + length]
        shared.close()  # what this worker forks (a container's init, hooks) must not hold it
        reply, out_fds = _handle(seq, data[_SEQ.size:], fds[1:], handlers, context)
    return 0 if _send(sock, reply, out_fds) else 1


def _fork_worker(sock: socket.socket, handlers: dict[str, Handler], shared: mmap.mmap, idle: float | None) -> int:
    """Fork a worker (see `_work`); its pid. Raises OSError if the fork failed (memory or process
    limits)."""
    _SEQ.pack_into(shared, _TAKEN_AT, 0)
    pid = bare_fork()
    if pid == 0:
        code = 1
        try:
            code = _work(sock, handlers, shared, idle)
        finally:
            os._exit(code)
    return pid


def _closed(sock: socket.socket) -> bool:
    """Block until a request (or the daemon's EOF) is waiting, without taking it; True on EOF."""
    select.select([sock], [], [])
    try:
        return not sock.recv(1, socket.MSG_PEEK)
    except OSError:
        return True


def _queued(sock: socket.socket, seq: int) -> bool:
    """Whether request `seq` still waits on the socket (its worker died before it took it)."""
    try:
        return sock.recv(_SEQ.size, socket.MSG_PEEK | socket.MSG_DONTWAIT) == _SEQ.pack(seq)
    except OSError:
        return False


def _answer_for(sock: socket.socket, seq: int, how: str) -> bool:
    """Answer request `seq` with the failure of the worker that could not; False if the daemon is gone."""
    return _send(sock, _error_reply(seq, ForkerError("internal", f"the forker's worker {how}")), [])


def _fail_waiting_request(sock: socket.socket, error: OSError) -> bool:
    """Take the waiting request and answer that no worker could be forked for it; False if the
    daemon is gone."""
    try:
        data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS + 1)
    except OSError:
        return False
    _close_all(fds)
    return len(data) >= _SEQ.size and _answer_for(sock, _SEQ.unpack_from(data)[0], f"could not be forked: {error}")


def serve(sock: socket.socket, handlers: dict[str, Handler], shared: mmap.mmap, spare_idle: float = SPARE_IDLE) -> None:
    """The forker's loop, until the daemon closes its end: keep one worker forked, and wait for it.

    The forker never reads a request. A worker, forked ahead of need, takes the next request from
    the socket the forker shares with it, serves it and answers the daemon itself. Running Python
    writes to the pages it touches (reference counts, new objects in half-full pools), and each page
    written stops being shared with the zygote: a worker's copies die with it, and the forker, which
    runs nothing but fork and waitpid, stays almost entirely shared however many containers it made.
    The next worker is forked once the last is done (not while it works, when the CPU is better
    spent on the request), so the requests that come in bursts (create then start, a run of execs)
    find one ready. A worker that waited `spare_idle` seconds for a request retires, and a
    long-lived container costs no third process; its next request pays for one fork, about 2 ms.
    The first worker waits however long it takes.

    A worker writes the number of the request it is about to take to a page it shares with the
    forker (`shared`, see `_CONTEXT_SPACE`). If it dies without answering, the forker answers for
    it, unless the request is still on the socket (the worker died before taking it): then the next
    worker serves it. The daemon sends one request at a time, so the request at the head of the
    socket can only be that one. A worker that cannot be forked fails the request it was needed
    for, and the forker goes on.
    """
    idle: float | None = None
    while True:
        try:
            pid = _fork_worker(sock, handlers, shared, idle)
        except OSError:
            if _closed(sock):
                return
            try:
                pid = _fork_worker(sock, handlers, shared, None)  # tried again once a request needs it
            except OSError as e:
                if not _fail_waiting_request(sock, e):
                    return
                continue
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        (seq,) = _SEQ.unpack_from(shared, _TAKEN_AT)
        if code == 0:
            idle = spare_idle
        elif seq:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            if not _queued(sock, seq) and not _answer_for(sock, seq, how):
                return
            idle = spare_idle
        elif code == _CLOSED:
            return
        elif code == _RETIRED:
            if _closed(sock):
                return
            idle = None  # for the request that is waiting
        else:  # it died before a request came (killed, or it could not read): fork another
            time.sleep(0.1)  # not at full speed if that keeps happening


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
        self._shared = mmap.mmap(-1, _CONTEXT_AT + _SEQ.size + _CONTEXT_SPACE)  # before the fork: shared
        self._max_request = _MAX_MESSAGE
        self.pid = 0

    def adopt(self, env: dict[str, str], cwd: str, namespace: str, debug: bool) -> None:
        """A spare daemon's forker was forked before its container was known: from now on every
        worker takes on first what a spawned daemon's forker would have inherited (environment,
        working directory, log settings). It is written once, to the pages shared with the forker
        and its workers, rather than sent again with every request."""
        context = json.dumps({"env": env, "cwd": cwd, "namespace": namespace, "debug": debug}).encode()
        if len(context) > _CONTEXT_SPACE:
            raise ForkerError("internal", f"the daemon's context takes {len(context)} bytes, over {_CONTEXT_SPACE}")
        start = _CONTEXT_AT + _SEQ.size
        self._shared[start:start + len(context)] = context
        _SEQ.pack_into(self._shared, _CONTEXT_AT, len(context))

    def start(self, keep_fds: tuple[int, ...] = (0, 1, 2)) -> int:
        """Fork the forker; must run before any thread or event loop exists. Returns its pid.

        The child keeps only `keep_fds` and its end of the socketpair, so it never holds the daemon's
        listening socket or connections.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):  # one message is one request: room for _MAX_MESSAGE, not ~208 KiB
            try:
                end.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, _MAX_MESSAGE)
            except OSError:  # not root: as much as net.core.wmem_max allows
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _MAX_MESSAGE)
        # what one message may hold: the kernel doubles the value set, and keeps some for itself
        self._max_request = min(_MAX_MESSAGE, ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2)
        pid = bare_fork()
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
                serve(theirs, self._handlers, self._shared, self._spare_idle)
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
                    socket.send_fds(sock, [message], [2, *fds])  # a worker logs where we log
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
        if len(fds) > _MAX_FDS:
            raise ForkerError("internal", f"a forker request carries at most {_MAX_FDS} fds")
        self._seq += 1
        seq = self._seq
        message = _SEQ.pack(seq) + json.dumps({"op": op, "args": args}).encode()
        if len(message) > self._max_request:
            raise ForkerError("internal",
                              f"a forker request of {len(message)} bytes is over the {self._max_request} limit")
        async with self._lock:
            with trio.CancelScope(shield=True):
                reply, out_fds = await self._roundtrip(message, seq, list(fds))
        error = reply.get("error")
        if error:
            _close_all(out_fds)
            raise ForkerError(error["kind"], error["message"], error.get("path", ""))
        return reply["result"], out_fds

    def close(self) -> None:
        """Close our end: the forker's worker sees EOF, and the forker exits after it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
