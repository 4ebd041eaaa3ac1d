"""The long-running shim daemon: process setup before trio, then the ttrpc server and its helpers.

Order matters here. The forker is forked while the process is still a plain single-threaded
Python, with SIGPIPE ignored (as in every child); then the daemon becomes a child subreaper (which
children do not inherit); only then does trio start. A daemon spawned by `start` (or by hand) knows its
container from the start. A zygote's spare does all of that but trio ahead of need and then waits
for its assignment (flags, environment, working directory and listener) in a blocking read, which
writes to far fewer pages than a waiting trio loop (0.6 against 2.0 MiB of private memory,
measured); only then does it open its log, hand its environment, working directory and log
settings to its forker's workers (`Forker.adopt`), and start trio. The daemon ends on
Shutdown with no tasks left, on SIGTERM/SIGINT, when its forker cannot be replaced, or when no Create arrived within
the grace period (containerd died between `start` and Create, reference §8.4) or since its last
task was deleted (containerd restarted before its Shutdown), and removes its
socket on the way out. A pool's daemon stays while a container that `start` just sent it is on
its way (see pool.py).
"""

import faulthandler
import gc
import logging
import marshal
import os
import signal
import socket
import time
from dataclasses import dataclass, field

import prctl
import trio

from railcar.ttrpc_proto.api import task_v2_pb2, task_v3_pb2
from railcar.ttrpc_proto.server import Server

from . import log as shim_log
from . import fdlimit, oomscore, paths, pool
from .events import Publisher
from .flags import Flags, parse
from .forker import RESPAWN_DELAYS, Forker, ForkerError, preload
from .reaper import Reaper, exit_status
from .service import TaskService

GRACE_ENV = "RAILCAR_SHIM_GRACE"
DEFAULT_GRACE = 30.0
EVENT_DRAIN_TIMEOUT = 5.0
REPLY_DRAIN_TIMEOUT = 1.0  # seconds for the answers being written at exit (a Wait may be pending for good)
LEAVE_RETRY = 0.2  # seconds between attempts to leave a pool while a container joins it
FORKER_MIN_LIFE = 1.0  # seconds: a forker that dies sooner after it was forked is not replaced again
PROCESS_NAME = "railcar-shim"  # the comm name ps/top show, whether spawned cold or forked by the zygote
SPARE_NAME = "railcar-spare"  # a zygote's spare until a `start` is passed to it


def _listener(flags: Flags) -> socket.socket:
    """The socket `start` passed as fd 3, or a fresh one at `-socket` when run by hand."""
    if flags.socket:
        path = flags.socket.removeprefix("unix://")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(128)
        return sock
    sock = socket.socket(fileno=3)
    sock.set_inheritable(False)
    return sock


def _grace() -> float:
    try:
        return float(os.environ.get(GRACE_ENV, DEFAULT_GRACE))
    except ValueError:
        return DEFAULT_GRACE


@dataclass
class Assignment:
    """What a daemon serves: the container `start` was run for, its bundle, listener and logger."""

    flags: Flags
    bundle: str
    listener: socket.socket
    logger: logging.Logger
    members: pool.Members | None = field(default=None, init=False)  # the pool it serves, if any
    left: bool = False  # it left its pool: the socket on its path may be a new daemon's
    path: str = field(default="", init=False)  # where the listener is bound
    socket_id: str | None = field(default=None, init=False)  # the file `start` bound (paths.socket_id)
    reachable: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        """Which socket file is ours: the one `start` says it bound (SOCKET_ID_ENV, taken out of
        the environment that the forker and containers inherit), or the one on the path now for a
        daemon bound by hand. If the path holds another file (or none), `start` gave up on this
        daemon and maybe another serves the path: nobody can reach this one, which touches nothing."""
        name = self.listener.getsockname()
        self.path = name if isinstance(name, str) else ""
        given = os.environ.pop(paths.SOCKET_ID_ENV, "")
        current = paths.socket_id(self.path) if self.path else None
        self.socket_id = given or current
        members = pool.Members(self.path, ours=self.socket_id)
        if current is None or current != self.socket_id:
            self.reachable = False
            self.left = True
        elif members.exists():
            self.members = members

    def leave(self, force: bool = False) -> bool:
        """Leave the pool, under its lock: remove the socket, the members and their directory
        (unless a newer daemon took the pool over). Unless `force`d (the daemon stops whatever
        comes), not while someone holds the lock or a container is joining; then False."""
        members = self.members
        if members is None or self.left:
            return True
        fd = members.lock(wait=force)
        if fd is None:
            return False
        try:
            if not force and members.joining(_grace()):
                return False
            members.dissolve()
            self.left = True
            return True
        finally:
            os.close(fd)

    def forget(self, container_id: str | None, tasks: dict[str, object]) -> None:
        """A container (if one) is no longer served: its member goes, and with it any member
        neither served nor joining (see `pool.Members.prune`). A pool that is no longer ours is
        left alone from then on."""
        if self.members is not None and not self.left:
            if container_id is not None:
                self.members.remove(container_id)
            if not self.members.prune(_grace(), tasks.__contains__):
                self.left = True


async def _serve(assignment: Assignment, forker: Forker) -> None:
    flags, bundle, listener, logger = assignment.flags, assignment.bundle, assignment.listener, assignment.logger
    async with trio.open_nursery() as nursery:
        reaper = Reaper()
        await nursery.start(reaper.run)
        publisher = Publisher(os.environ.get("TTRPC_ADDRESS", ""), flags.namespace, logger)
        nursery.start_soon(publisher.run)
        service = TaskService(namespace=flags.namespace, root=paths.runtime_root(flags.namespace), forker=forker,
                              reaper=reaper, publisher=publisher, nursery=nursery, logger=logger,
                              log_bundle=bundle,
                              removed=lambda container_id: assignment.forget(container_id, service.tasks))
        server = Server(require_same_user=True)
        server.register("containerd.task.v2.Task", service.methods(task_v2_pb2))
        server.register("containerd.task.v3.Task", service.methods(task_v3_pb2))
        server_scope = trio.CancelScope()

        async def serve() -> None:
            with server_scope:
                await server.serve(trio.socket.from_stdlib_socket(listener))

        nursery.start_soon(serve)
        stop = trio.Event()

        def stop_now() -> None:
            """Leave the pool before serving stops, so that no `start` sends this daemon more."""
            assignment.leave(force=True)
            stop.set()

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    logger.info("received %s, exiting", signal.Signals(signum).name)
                    stop_now()

        async def on_shutdown() -> None:
            while True:
                await service.shutdown_requested.wait()
                if service.tasks:  # a container joined the pool after all
                    service.shutdown_requested = trio.Event()
                elif assignment.leave():
                    stop.set()
                    return
                else:
                    await trio.sleep(LEAVE_RETRY)

        async def on_idle() -> None:
            """Shut down as a Shutdown would once no task has been served for the grace period:
            no Create came after `start` (containerd died in between, reference §8.4), or none
            since the last Delete (containerd restarted before the Shutdown that follows it, which
            then never comes). A pool's daemon still waits for a container on its way."""
            while True:
                while service.tasks:
                    await service.tasks_changed.wait()
                with trio.move_on_after(_grace()):
                    await service.tasks_changed.wait()
                    continue
                logger.warning("no task for %.0f s, exiting", _grace())
                service.shutdown_requested.set()
                await service.tasks_changed.wait()  # a container joined the pool after all

        async def prune_members() -> None:
            """A member whose `start` was killed (containerd's timeout) never gets a Delete."""
            while assignment.members is not None and not assignment.left:
                await trio.sleep(_grace())
                try:
                    assignment.forget(None, service.tasks)
                except OSError as e:  # (out of fds, say) only a clean-up: the next tick tries again
                    logger.warning("cannot prune the pool's members: %s", e)

        async def watch_forker() -> None:
            """Every container operation goes through the forker. One that dies (killed, or out of
            memory) is replaced, and the pool's containers are served on: the requests it had not
            passed to a worker go to the new one (as does one that finds no forker). One that
            dies again right after it was forked would keep dying: the daemon then leaves its pool
            and exits at once, and containerd cleans its containers up, as after a daemon's crash."""
            while True:
                how = exit_status(await reaper.wait(forker.pid))
                if time.monotonic() - forker.started < FORKER_MIN_LIFE:
                    logger.error("the forker (pid %d) died within %.0f s of its start (status %d): no container "
                                 "can be made, killed or deleted, exiting", forker.pid, FORKER_MIN_LIFE, how)
                    forker.abandon()
                    stop_now()
                    return
                failure: OSError | None = None
                for delay in (0.0, *RESPAWN_DELAYS):  # a fork may fail for a while (memory, pids),
                    await trio.sleep(delay)  # and what killed the forker may well be a shortage of memory
                    try:
                        forker.respawn()
                        failure = None
                        break
                    except OSError as e:
                        failure = e
                if failure is not None:
                    logger.error("the forker (pid %d) is gone (status %d) and cannot be replaced (%s): exiting",
                                 forker.pid, how, failure)
                    forker.abandon()
                    stop_now()
                    return
                logger.error("the forker died (status %d): the new one is pid %d", how, forker.pid)

        nursery.start_soon(on_signals)
        nursery.start_soon(on_shutdown)
        nursery.start_soon(watch_forker)
        nursery.start_soon(on_idle)
        nursery.start_soon(prune_members)
        logger.info("railcar shim serving bundle=%s", bundle)
        await stop.wait()
        with trio.move_on_after(REPLY_DRAIN_TIMEOUT):  # the Shutdown reply leaves before the connection closes
            await server.drain()
        server_scope.cancel()
        publisher.close()
        with trio.move_on_after(EVENT_DRAIN_TIMEOUT):
            await publisher.drained()
        if publisher.pending:
            logger.error("exiting with %d events containerd did not take", publisher.pending)
        nursery.cancel_scope.cancel()


def debug_signals() -> None:
    """SIGUSR1 writes this process's Python stack to its stderr (a daemon's: the log containerd
    shows, as runc's shim dumps its goroutines there) and SIGUSR2 does nothing, as in any Go program:
    an operator who sends them to shims, ours among them, must not end every container of a pool.
    The forker and its workers inherit both; the runtime sets every signal back to its default
    before a container's execve."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _prepare(name: str = PROCESS_NAME) -> Forker:
    """The daemon's name (a zygote's spare is named as one from the start: ps, and whatever counts
    shims, never sees its forker under a parent named otherwise), then the forker, forked while
    this is still a single-threaded plain Python, then the rest of the daemon's own set-up (child
    subreaper, which a fork does not pass on). The forker comes as early as it can, with SIGPIPE
    already ignored (inherited, as for every child): each page the daemon writes before the fork
    and again afterwards leaves the forker the only holder of a copy."""
    prctl.set_name(name)
    debug_signals()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    preload()   # (a no-op in a zygote's daemon: the zygote loaded it all)
    fdlimit.raise_soft()   # (the zygote's daemon has it from the zygote)
    # Freeze before forking the forker, so that neither process's collector ever walks (and so
    # copies) the objects they share; a cold daemon's imports are frozen here too.
    gc.freeze()
    forker = Forker()
    forker.start()
    prctl.set_child_subreaper(1)
    return forker


async def _serve_then_close(assignment: Assignment, forker: Forker) -> None:
    """Serve, log a failure, and remove the socket on the way out: before the listener closes, so
    that a `start` never finds it refusing and binds a socket this would then remove."""
    try:
        if assignment.reachable:
            await _serve(assignment, forker)
        else:
            assignment.logger.warning("%s is no longer the socket start bound for this daemon, exiting",
                                      assignment.path)
    except BaseException:
        assignment.logger.exception("shim daemon failed")
        raise
    finally:
        if assignment.members is not None:
            assignment.leave(force=True)
        elif assignment.reachable and paths.socket_id(assignment.path) == assignment.socket_id:
            try:
                os.unlink(assignment.path)
            except OSError:
                pass
        assignment.listener.close()
        assignment.logger.info("railcar shim exiting")


def run(flags: Flags) -> int:
    """Run the daemon for `flags` until it is told to stop; returns the process exit code."""
    bundle = os.path.abspath(flags.bundle or os.getcwd())
    assignment = Assignment(flags, bundle, _listener(flags), shim_log.setup(bundle, flags.namespace, flags.debug))
    forker = _prepare()
    try:
        trio.run(_serve_then_close, assignment, forker)
    finally:
        forker.close()
    return 0


def _assigned(conn: socket.socket, forker: Forker, holds_fd3: bool) -> Assignment | None:
    """Wait for the zygote to pass on a `start` request, and take on its container; None if the
    zygote closed the connection first (it is exiting)."""
    try:
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 1)
    except OSError:
        return None
    finally:
        conn.close()
    for fd in fds:
        os.set_inheritable(fd, False)
    if not data or len(fds) != 1:
        return None
    prctl.set_name(PROCESS_NAME)
    request = marshal.loads(data)  # from our parent, the zygote, which checked it
    oomscore.take(request.get("oom_score_adj"))
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    listener_fd = fds[0]
    if holds_fd3:  # the same shape as a spawned daemon: the listener is fd 3
        os.dup2(listener_fd, 3, inheritable=False)
        os.close(listener_fd)
        listener_fd = 3
    flags = parse(request["flags"])
    bundle = os.path.abspath(flags.bundle or os.getcwd())
    assignment = Assignment(flags, bundle, socket.socket(fileno=listener_fd),
                            shim_log.setup(bundle, flags.namespace, flags.debug))
    try:
        forker.adopt(dict(os.environ), os.getcwd(), flags.namespace, flags.debug, request.get("oom_score_adj"))
    except ForkerError as e:  # its workers keep the zygote's environment and working directory
        assignment.logger.warning("%s", e)
    return assignment


def run_spare(conn: socket.socket) -> int:
    """Run a zygote's spare daemon: prepared now, serving once the zygote passes a `start` on `conn`.

    fd 3 is held (on /dev/null) until then, so that the listener can take it.
    """
    placeholder = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    if placeholder != 3:
        os.close(placeholder)
    forker = _prepare(SPARE_NAME)
    try:
        assignment = _assigned(conn, forker, placeholder == 3)
        if assignment is not None:
            trio.run(_serve_then_close, assignment, forker)
    finally:
        forker.close()
    return 0
