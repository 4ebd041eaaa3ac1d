"""The forker: a plain-Python child made before trio starts, which does all of the daemon's forking.

Forking a process that runs a trio loop (threads, signal wakeup fds, epoll) is unsafe, and a forked
child would inherit the daemon's sockets. So the daemon forks this helper first, while it is still a
single-threaded plain process, and sends requests over a SOCK_SEQPACKET socketpair: one JSON
message per request or reply, with file descriptors attached (SCM_RIGHTS). Each request is taken
and served by a one-shot worker, a copy of the forker forked ahead of need (see `serve`), which
runs the runtime's forking calls (create, exec, start and delete, which run hooks) and the rootfs
mounts.
The processes the runtime starts are orphaned to the daemon (a child subreaper), whose reaper owns
every exit. (Logger binaries need no forker: posix_spawn runs no Python in the child.) A forker that
dies is replaced by one the daemon forks as it runs (`Forker.respawn`), and the pool's containers
are served on.
"""

import contextlib
import errno
import itertools
import json
import logging
import mmap
import os
import select
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import prctl
import trio

# Cheap: the package holds only the errors; `runtime.Container` loads the container module (spec,
# mounts, cgroups) on first use, in the forker, or earlier when a zygote warmed it up.
from railcar import runtime
from railcar.runtime.errors import ContainerNotFound, RuntimeFailure, SpecError, shorten
from railcar.runtime.syscalls import bare_fork, readable

from . import log as shim_log
from . import fdlimit, oomscore

PROCESS_NAME = "railcar-forker"
WORKER_NAME = "railcar-worker"
# No message, request or reply, is over _MAX_MESSAGE bytes: a socket's default buffer carries it,
# the kernel needs no large contiguous allocation for it, and a receive's room is never too small.
# A bigger request (an exec's process spec carries the container's whole environment: Kubernetes'
# service variables can make it megabytes) travels in a memfd, the "carrier", attached after the
# request's own fds, the message holding only its number; a reply is small (see `_send`).
_MAX_MESSAGE = 64 << 10
_MAX_FDS = 16
SPARE_IDLE = 2.0  # seconds a spare worker waits for a request before it is retired
RESPAWN_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6)  # seconds before each new try to fork a forker that died (shim.daemon)
# How long a request found no forker waits for the daemon to fork a new one: its tries, and a margin.
_REPLACEMENT_WAIT = sum(RESPAWN_DELAYS) + 1.0
_PEER_GONE = {errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOTCONN}  # what such a send fails with


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
    that fails unmounts what it mounted (the daemon's undo unmounts again if this could not). The
    reply also says what the daemon needs of the spec the container was made from (its cgroup,
    whether it shares a pid namespace), so that the daemon never reads config.json itself."""
    from railcar.runtime.mounts import mount_layers, unmount_all

    stdio = (fds[0], fds[1], fds[2]) if len(fds) == 3 else None
    target = os.path.join(args["bundle"], "rootfs")
    if args.get("mounts"):
        mount_layers(args["mounts"], target)
    try:
        container, result = runtime.Container.create(args["id"], args["bundle"], root=args["root"], stdio=stdio,
                                                     terminal=args["terminal"])
    except BaseException:
        if args.get("mounts"):
            try:
                unmount_all(target)
            except Exception:
                pass
        raise
    reply, fds = _process_result(result)
    reply.update(cgroup=container.cgroup_state, shares_pids=container.shares_pids())
    return reply, fds


def exec_process(args: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    """Container.exec of an OCI Process dict; same stdio rules as create."""
    stdio = (fds[0], fds[1], fds[2]) if len(fds) == 3 else None
    container = _load(args)
    result = container.exec(args["process"], stdio=stdio, terminal=args["terminal"])
    return _process_result(result)


def _process_result(result: Any) -> tuple[Any, list[int]]:
    console = getattr(result, "console_fd", None)
    return ({"pid": result.pid, "started": result.started, "console": console is not None},
            [console] if console is not None else [])


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


HANDLERS: dict[str, Handler] = {
    "create": create,
    "exec": exec_process,
    "start": start,
    "delete": delete,
    "kill": kill,
    "pause": pause,
    "resume": resume,
    "update": update,
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
    """(Its text shortened: an error can quote a request's value, and requests can be megabytes.)"""
    return {"seq": seq, "error": {"kind": e.kind, "message": shorten(e.message), "path": shorten(e.path)}}


def _send(sock: socket.socket, reply: dict[str, Any], fds: list[int]) -> bool:
    """Answer the daemon. A reply is never over _MAX_MESSAGE bytes, which a default socket buffer
    carries and the daemon's receive makes room for: none is refused, or cut short and lost while
    its call waits. (A result is never that big; an error's text is shortened, and its characters
    take at most 4 bytes each: UTF-8, not JSON's 12-byte escapes of a pair of surrogates.)"""
    data = json.dumps(reply, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if len(data) > _MAX_MESSAGE:
        _close_all(fds)
        fds = []
        too_big = ForkerError("internal", f"the forker's reply of {len(data)} bytes is over {_MAX_MESSAGE}")
        data = json.dumps(_error_reply(reply["seq"], too_big)).encode()
    try:
        socket.send_fds(sock, [data], fds)
        return True
    except OSError:
        return False
    finally:
        _close_all(fds)


def _adopt(context: dict[str, Any]) -> None:
    """Take the daemon's environment, working directory, log settings and OOM score: a spare
    daemon's forker was forked before its container was known (see `Forker.adopt`). If that
    directory is gone (the bundle of a grouped daemon's first container), the worker works in /."""
    oomscore.take(context.get("oom_score_adj"))
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
# What a worker tells the forker, through a pipe, once it took a request: its pid and the number.
_NOTE = struct.Struct("<qq")
# The pages the daemon shares with its forker and every worker (MAP_SHARED, mapped before the
# forker's fork): the number of the request the waiting worker is about to take (the forker sets it
# back to 0 for each new waiting worker), the number of the last request a worker took, noted once it
# has it and before any of it runs (never set back: the daemon reads it once every worker is gone,
# see `_Link.reply`), then the daemon's context (see `Forker.adopt`): its length and its JSON. Pages
# never written cost nothing.
_TAKEN_AT, _LAST_TAKEN_AT, _CONTEXT_AT = 0, _SEQ.size, 2 * _SEQ.size
_CONTEXT_SPACE = 1 << 20  # the environment came in one SEQPACKET message (~208 KiB by default); JSON can grow it
_RETIRED = 3  # a worker's exit status: it waited `idle` seconds and no request came
_CLOSED = 4  # a worker's exit status: the daemon closed its end


def _work(sock: socket.socket, handlers: dict[str, Handler], shared: mmap.mmap, notes: int,
          idle: float | None) -> int:
    """A forked worker's life: wait for one request on the forker's socket (at most `idle` seconds,
    if given), note its number in `shared` before taking it, tell the forker through `notes` once
    it has it, serve it with the daemon's fd 2 (the message's first fd) and context, and answer the
    daemon directly. Returns the exit status."""
    prctl.set_name(WORKER_NAME)
    fdlimit.give_back()   # what it starts (the containers' processes, hooks) gets containerd's limit
    if idle is not None and not readable(sock.fileno(), idle):
        return _RETIRED
    head = sock.recv(_SEQ.size, socket.MSG_PEEK)  # (an error: exit 1, nothing taken)
    if not head:
        return _CLOSED
    (seq,) = _SEQ.unpack(head)
    _SEQ.pack_into(shared, _TAKEN_AT, seq)
    data, fds, flags, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS + 2)
    _SEQ.pack_into(shared, _LAST_TAKEN_AT, seq)  # (before anything of it runs: see `_Link.reply`)
    try:
        os.write(notes, _NOTE.pack(os.getpid(), seq))  # the forker forks the next waiting worker now
    except OSError:  # the forker died (the daemon forks another): this request is served all the same
        pass
    os.close(notes)
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
        body, request_fds = data[_SEQ.size:], fds[1:]
        if not body and request_fds:  # it came in a carrier
            body = _carried(request_fds.pop())
        reply, out_fds = _handle(seq, body, request_fds, handlers, context)
    return 0 if _send(sock, reply, out_fds) else 1


def _carrier(body: bytes) -> int:
    """A memfd holding `body` (see _MAX_MESSAGE)."""
    fd = os.memfd_create("railcar-request", os.MFD_CLOEXEC)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _carried(fd: int) -> bytes:
    """What a carrier holds (read from its start: its file offset is the daemon's too); closes it."""
    try:
        size, chunks, at = os.fstat(fd).st_size, [], 0
        while at < size:
            chunk = os.pread(fd, size - at, at)
            if not chunk:
                break
            chunks.append(chunk)
            at += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _closed(sock: socket.socket) -> bool:
    """Whether the daemon closed its end (a readable socket holds a request otherwise)."""
    try:
        return not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
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
        data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS + 2)
    except OSError:
        return False
    _close_all(fds)
    return len(data) >= _SEQ.size and _answer_for(sock, _SEQ.unpack_from(data)[0], f"could not be forked: {error}")


def _how(code: int) -> str:
    return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"


class _Workers:
    """The forker's book of its workers: at most one waiting for a request (`waiter`), any number
    serving one (`busy`, pid to request number), and a pidfd for each, so that one `poll` sees a
    worker's exit and a request nobody waits for."""

    def __init__(self, sock: socket.socket, handlers: dict[str, Handler], shared: mmap.mmap) -> None:
        self.sock, self.handlers, self.shared = sock, handlers, shared
        self.notes, self._notes_in = os.pipe()
        os.set_blocking(self.notes, False)
        self.waiter = 0
        self.busy: dict[int, int] = {}
        self.pidfds: dict[int, int] = {}
        self.starved = False  # no worker could be forked: the request waits for a busy worker's exit

    def fork(self, idle: float | None) -> None:
        """Fork the waiting worker (see `_work`). Raises OSError if the fork failed (memory or
        process limits)."""
        _SEQ.pack_into(self.shared, _TAKEN_AT, 0)
        pid = bare_fork()
        if pid == 0:
            code = 1
            try:
                _close_all([self.notes, *self.pidfds.values()])
                code = _work(self.sock, self.handlers, self.shared, self._notes_in, idle)
            finally:
                os._exit(code)
        try:
            self.pidfds[pid] = os.pidfd_open(pid)
        except OSError:  # (out of fds) a waiter nobody watches would break the one-taker rule
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        self.waiter = pid

    def wait(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]], bool]:
        """Block until something happens: the notes of workers that took a request (pid, number),
        then the workers that exited (pid, exit code), and whether a request waits with no worker
        waiting for it (or the daemon closed its end). The notes are read after the exits are
        reaped: a worker writes its note before it exits, so no exit is seen before its note."""
        poller = select.poll()
        for fd in [self.notes, *self.pidfds.values()]:
            poller.register(fd, select.POLLIN)
        watch_sock = not self.waiter and not self.starved
        if watch_sock:
            poller.register(self.sock, select.POLLIN)
        ready = {fd for fd, _ in poller.poll()}
        exits = []
        for pid, fd in list(self.pidfds.items()):
            if fd in ready:
                os.close(self.pidfds.pop(pid))
                exits.append((pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])))
        notes = []
        try:
            while data := os.read(self.notes, _NOTE.size * 64):  # whole notes: a small pipe write is atomic
                notes += [_NOTE.unpack_from(data, at) for at in range(0, len(data), _NOTE.size)]
        except BlockingIOError:
            pass
        return notes, exits, watch_sock and self.sock.fileno() in ready


def serve(sock: socket.socket, handlers: dict[str, Handler], shared: mmap.mmap, spare_idle: float = SPARE_IDLE) -> None:
    """The forker's loop, until the daemon closes its end: keep one worker waiting for a request.

    The forker never reads a request. A worker, forked ahead of need, takes the next request from
    the socket the forker shares with it, tells the forker (which forks the next waiting worker
    then), serves it and answers the daemon itself. Requests are served concurrently, one worker
    each: a daemon serving many containers (a pod, a pool) does not queue one container's create
    behind another's. Running Python writes to the pages it touches (reference counts, new objects
    in half-full pools), and each page written stops being shared with the zygote: a worker's
    copies die with it, and the forker, which runs nothing but fork and waitpid, stays almost
    entirely shared however many containers it made. The requests that come in bursts (create then
    start, a run of execs, many containers at once) find a worker ready. A waiting worker that saw
    no request for `spare_idle` seconds retires, and a long-lived container costs no third process;
    its next request pays for one fork, about 2 ms. The first worker waits however long it takes.

    The waiting worker writes the number of the request it is about to take to a page it shares
    with the forker (`shared`, see `_CONTEXT_SPACE`). If it dies before its note came, the forker
    answers for it, unless the request is still on the socket (the worker died before taking it):
    then the next worker serves it. Only the waiting worker takes requests, so the request at the
    head of the socket can only be that one. A worker that dies after its note is answered for. When
    no worker can be forked (memory, a pids limit), the request waits for a busy worker to finish,
    and fails if none is busy; the forker goes on.
    """
    workers = _Workers(sock, handlers, shared)
    idle: float | None = None
    spare = True  # fork a waiting worker now, not only once a request waits
    while True:
        if spare and not workers.waiter:
            try:
                workers.fork(idle)
            except OSError:
                pass  # tried again once a request waits
            spare = False
        notes, exits, unwaited = workers.wait()
        for pid, seq in notes:
            workers.busy[pid] = seq
            if pid == workers.waiter:
                workers.waiter, spare, idle = 0, True, spare_idle
        for pid, code in exits:
            if pid in workers.busy:
                seq = workers.busy.pop(pid)
                workers.starved = False  # its pids are free
                if code != 0 and not _answer_for(sock, seq, _how(code)):
                    return
                continue
            workers.waiter = 0
            (seq,) = _SEQ.unpack_from(shared, _TAKEN_AT)
            if code == _CLOSED:
                return
            if code == _RETIRED:
                idle = None  # the next worker is for a request that waits
            elif seq:  # it died taking a request
                if not _queued(sock, seq) and not _answer_for(sock, seq, _how(code)):
                    return
                spare, idle = True, spare_idle
            else:  # it died before a request came (killed, or it could not read): fork another
                time.sleep(0.1)  # not at full speed if that keeps happening
                spare = True
        if unwaited and not workers.waiter:
            if _closed(sock):
                return
            try:
                workers.fork(None)
            except OSError as e:
                if workers.busy:  # tried again when one of them is done
                    workers.starved = True
                elif not _fail_waiting_request(sock, e):
                    return


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


def preload() -> None:
    """Import all the runtime code a worker runs, before the forker is forked. Every worker then
    runs the code its daemon started with, never files an upgrade in place has replaced since (the
    runtime package loads `container` on first use, and `container` its hooks), and none pays for
    the imports itself."""
    import railcar.runtime.container  # noqa: F401
    import railcar.runtime.hooks  # noqa: F401


class _Untaken(Exception):
    """Every holder of the forker's end of a link is gone, and no worker took this request: it
    never ran, and may be sent again."""


class _Link:
    """One forker process and the daemon's end of the socket to it. A request is answered through
    the link it was sent on: by its worker, which outlives a forker that died (see `Forker.respawn`).

    A request is numbered as it leaves (`numbers` serves all of a daemon's links): the socket
    hands requests to workers in the order they were sent, so the numbers taken only ever grow.
    """

    def __init__(self, sock: socket.socket, pid: int, shared: mmap.mmap, max_request: int,
                 numbers: Iterator[int]) -> None:
        self.sock, self.pid, self.shared, self.max_request = sock, pid, shared, max_request
        self.numbers = numbers
        self.sending = trio.Lock()  # one message at a time: trio lets one task wait for a writable fd
        self.senders = 0  # the calls in `send`: waiting for their turn or for room, or sending
        self.awaited: set[int] = set()  # the numbers of the requests sent and not yet answered
        self.replies: dict[int, tuple[dict[str, Any], list[int]]] = {}  # received, not yet taken
        self.reading = False  # a call is receiving for all of them
        self.arrived = trio.Event()  # set (and replaced) whenever that call received something
        self.retired = False  # its forker died: closed once its last request is answered
        self.started = time.monotonic()

    def write_context(self, context: bytes) -> None:
        start = _CONTEXT_AT + _SEQ.size
        self.shared[start:start + len(context)] = context
        _SEQ.pack_into(self.shared, _CONTEXT_AT, len(context))

    async def send(self, body: bytes, fds: list[int]) -> int:
        """Send a request (its JSON `body`); returns its number, awaited from then on. Nothing has
        left if this raises, or is cancelled."""
        self.senders += 1
        try:
            async with self.sending:
                seq = next(self.numbers)
                message = _SEQ.pack(seq) + body
                while True:
                    try:
                        socket.send_fds(self.sock, [message], [2, *fds])  # a worker logs where we log
                        self.awaited.add(seq)
                        return seq
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(self.sock)
        finally:
            self.senders -= 1
            self.done()  # (a call that gave up: nothing else may be in flight on a retired link)

    async def reply(self, seq: int) -> tuple[dict[str, Any], list[int]]:
        """The reply to request `seq`. One waiting call at a time receives, for every call: a reply
        for another is kept for it, and a late answer to a request nobody waits for any more (its
        worker died after it answered, and the forker answered again) is dropped with its fds."""
        while seq not in self.replies:
            if self.reading:
                await self.arrived.wait()
                continue
            self.reading = True
            try:
                data, fds = await receive(self.sock, _MAX_MESSAGE, _MAX_FDS)
            except ConnectionResetError:  # its last worker left with a request untaken (see `retire`):
                continue  # reported once, ahead of the replies still queued here and of the end
            finally:
                self.reading = False
                arrived, self.arrived = self.arrived, trio.Event()
                arrived.set()
            if not data:  # every holder of the other end is gone: no answer will come
                (last_taken,) = _SEQ.unpack_from(self.shared, _LAST_TAKEN_AT)
                if seq > last_taken:  # no worker ran any of it: it may go to another forker
                    raise _Untaken()
                raise ForkerError("internal", "the forker process is gone")
            try:
                reply = json.loads(data)
            except ValueError:  # cannot happen (every reply is json.dumps'): nobody's, at least
                reply = {}
            if isinstance(reply, dict) and reply.get("seq") in self.awaited and reply["seq"] not in self.replies:
                self.replies[reply["seq"]] = reply, fds
            else:
                _close_all(fds)
        return self.replies.pop(seq)

    def retire(self) -> None:
        """Its forker is gone. Its waiting worker takes one request still queued, if any, and
        sees the end of the socket after it; the workers that took a request answer it. A request
        none of them took is sent again, to the new forker, once they are all gone (`reply` reads
        the end of the socket)."""
        self.retired = True
        if self.awaited or self.senders:
            with contextlib.suppress(OSError):  # (its other end is gone already: the end comes at once)
                self.sock.shutdown(socket.SHUT_WR)
        else:
            self.close()

    def done(self, seq: int = 0) -> None:
        """Request `seq` was answered or failed (0: a call left `send`): a retired link closes once
        nothing is in flight on it."""
        self.awaited.discard(seq)
        if self.retired and not self.awaited and not self.senders:
            self.close()

    def close(self) -> None:
        self.sock.close()
        self.shared.close()


class Forker:
    """The daemon's handle on the forker process: start it before trio, then `await call(...)`."""

    def __init__(self, handlers: dict[str, Handler] = HANDLERS, spare_idle: float = SPARE_IDLE) -> None:
        self._handlers = handlers
        self._spare_idle = spare_idle
        self._link: _Link | None = None
        self._context = b""  # see `adopt`
        self._numbers = itertools.count(1)  # the requests' numbers, over every link (see `_Link`)
        self._in_order: dict[str, tuple[trio.Lock, int]] = {}  # container id: its lock, and how many hold or want it
        self._replaced = trio.Event()  # set (and replaced) whenever `start` makes a new link
        self._abandoned = False  # the daemon forks no new forker any more (see `abandon`)

    @property
    def pid(self) -> int:
        """The forker's pid (0 before `start`)."""
        return self._link.pid if self._link is not None else 0

    @property
    def started(self) -> float:
        """When the forker was forked (time.monotonic)."""
        return self._link.started if self._link is not None else 0.0

    def adopt(self, env: dict[str, str], cwd: str, namespace: str, debug: bool, oom_score: int | None) -> None:
        """A spare daemon's forker was forked before its container was known: from now on every
        worker takes on first what a spawned daemon's forker would have inherited (environment,
        working directory, log settings, OOM score). It is written once, to the pages shared with
        the forker and its workers, rather than sent again with every request."""
        context = json.dumps({"env": env, "cwd": cwd, "namespace": namespace, "debug": debug,
                              "oom_score_adj": oom_score}).encode()
        if len(context) > _CONTEXT_SPACE:
            raise ForkerError("internal", f"the daemon's context takes {len(context)} bytes, over {_CONTEXT_SPACE}")
        self._context = context
        if self._link is not None:
            self._link.write_context(context)

    def start(self) -> int:
        """Fork the forker; must run while the process has no thread (before trio starts, or in
        `respawn`). Returns its pid.

        The child keeps only its stdio (the log) and its end of the socketpair, so it never holds the
        daemon's listening socket or connections.
        """
        previous = self._link
        shared = mmap.mmap(-1, _CONTEXT_AT + _SEQ.size + _CONTEXT_SPACE)  # before the fork: shared
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # What goes in a message (net.core.wmem_default is ~208 KiB, of which a message may have
        # about half: the kernel doubles the value set, and keeps some for itself).
        max_request = min(_MAX_MESSAGE, ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2)
        link = _Link(ours, 0, shared, max_request, self._numbers)
        if self._context:
            link.write_context(self._context)
        try:
            pid = bare_fork()
        except OSError:
            link.close()
            theirs.close()
            raise
        if pid == 0:
            code = 0
            try:
                ours.close()
                if previous is not None:  # (respawn) the dead forker's pages are not this one's
                    previous.shared.close()
                prctl.set_name(PROCESS_NAME)
                # SIGPIPE stays ignored (as in the daemon): a write to a helper that died must be an
                # error the request reports, not the death of the forker. The runtime resets every
                # signal to its default before the container's execve. Forked by `respawn`, the
                # child has trio's handlers: set back, and no wakeup fd, whose number is reused.
                signal.set_wakeup_fd(-1)
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                    signal.signal(signum, signal.SIG_DFL)
                keep = {0, 1, 2, theirs.fileno()}
                for name in os.listdir("/proc/self/fd"):
                    fd = int(name)
                    if fd not in keep:
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                serve(theirs, self._handlers, shared, self._spare_idle)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        link.pid = pid
        self._link = link
        replaced, self._replaced = self._replaced, trio.Event()
        replaced.set()
        return pid

    def respawn(self) -> int:
        """Replace a forker that died (the daemon's reaper saw its exit) with a new one, forked from
        the daemon as it runs: no thread runs in it, and the child leaves trio's state alone. The
        requests a worker of the old forker took are answered, or fail, through the old link; those
        none took go to the new forker once no worker of the old one is left (`_Link.retire`); every
        later one goes to the new forker. Returns its pid; raises OSError if it cannot be forked."""
        old = self._link
        assert old is not None, "Forker.start() was not called"
        self.start()
        old.retire()
        return self.pid

    def abandon(self) -> None:
        """The daemon gives up on its forker (it died again at once, or no new one can be forked)
        and exits: the requests waiting for a new one fail now, and so do later ones."""
        self._abandoned = True
        self._replaced.set()

    @contextlib.asynccontextmanager
    async def _in_order_of(self, key: str | None) -> AsyncIterator[None]:
        """Hold container `key`'s turn (no turn to wait for without one)."""
        if not key:
            yield
            return
        lock, users = self._in_order.get(key) or (trio.Lock(), 0)
        self._in_order[key] = lock, users + 1
        try:
            async with lock:
                yield
        finally:
            lock, users = self._in_order.pop(key)
            if users > 1:
                self._in_order[key] = lock, users - 1

    async def _send(self, body: bytes, fds: list[int]) -> tuple[_Link, int]:
        """Send a request through the current link; returns that link and the request's number. A
        link whose forker died while the request waited to leave refuses it (`_Link.retire`): the
        new forker's link takes it. So does the current link once nothing holds its other end (its
        forker died with no worker waiting): the request waits for the daemon to fork a new forker
        (`respawn`), and fails if none comes (`abandon`, or a daemon that did not try). Another
        error fails it at once. Until this returns, nothing has left: it can be cancelled."""
        while True:
            link = self._link
            assert link is not None, "Forker.start() was not called"
            try:
                return link, await link.send(body, fds)
            except OSError as e:
                if link is self._link:
                    if e.errno not in _PEER_GONE or self._abandoned:
                        raise
                    replaced = self._replaced
                    with trio.move_on_after(_REPLACEMENT_WAIT):
                        await replaced.wait()
                    if link is self._link:
                        raise

    async def call(self, op: str, args: dict[str, Any], fds: tuple[int, ...] | list[int] = ()) -> tuple[Any, list[int]]:
        """Run `op` in the forker; returns (result, received fds). Raises ForkerError on failure.

        Calls run concurrently, each in a worker of its own, except that the calls naming one
        container (`id`) run one at a time, in order: the runtime's state of a container is not
        written by two processes at once. A call can be cancelled until it is sent (while it waits
        for its turn, or for a new forker); once sent it is never abandoned half-way (its reply must
        be read, its worker has started), so cancellation takes effect only after the reply arrived.
        A request left on the socket of a forker that died, which no worker took, is sent again.
        """
        assert self._link is not None, "Forker.start() was not called"
        if len(fds) > _MAX_FDS:
            raise ForkerError("internal", f"a forker request carries at most {_MAX_FDS} fds")
        body = json.dumps({"op": op, "args": args}).encode()
        fds = list(fds)
        carrier = None
        if _SEQ.size + len(body) > self._link.max_request:
            try:
                carrier = _carrier(body)
            except OSError as e:
                raise ForkerError("internal", f"cannot pass a forker request of {len(body)} bytes in a memfd: {e}") \
                    from None
            body, fds = b"", [*fds, carrier]
        try:
            async with self._in_order_of(args.get("id")):
                while True:
                    try:
                        link, seq = await self._send(body, fds)
                        with trio.CancelScope(shield=True):
                            try:
                                reply, out_fds = await link.reply(seq)
                                break
                            except _Untaken:
                                continue
                            finally:
                                link.done(seq)
                    except OSError as e:
                        raise ForkerError("internal", f"the forker process is gone: {e}") from None
        finally:
            if carrier is not None:
                os.close(carrier)
        error = reply.get("error")
        if error:
            _close_all(out_fds)
            raise ForkerError(error["kind"], error["message"], error.get("path", ""))
        return reply["result"], out_fds

    def close(self) -> None:
        """Close our end: the forker's waiting worker sees EOF, and the forker exits after it (a
        worker still serving a request ends on its own: the daemon closes once nothing is in flight).
        `pid` still names it, for the caller to reap."""
        if self._link is not None:
            self._link.close()
