"""The long-running shim daemon: process setup before trio, then the ttrpc server and its helpers.

Order matters here. Everything that must be true for every child (fd 2 on the log FIFO, SIGPIPE
ignored, child subreaper) is set first; then the forker is forked while the process is still a
plain single-threaded Python; only then does trio start. The daemon ends on Shutdown with no tasks
left, on SIGTERM/SIGINT, or when no Create arrived within the grace period (containerd died between
`start` and Create, reference §8.4), and removes its socket on the way out.
"""

import ctypes
import gc
import os
import signal
import socket

import prctl
import trio

from railcar.ttrpc_proto.api import task_v2_pb2, task_v3_pb2
from railcar.ttrpc_proto.server import Server

from . import log as shim_log
from . import paths
from .events import Publisher
from .flags import Flags
from .forker import Forker
from .reaper import Reaper
from .service import TaskService

PR_SET_CHILD_SUBREAPER = 36
GRACE_ENV = "RAILCAR_SHIM_GRACE"
DEFAULT_GRACE = 30.0
EVENT_DRAIN_TIMEOUT = 5.0
PROCESS_NAME = "railcar-shim"  # the comm name ps/top show, whether spawned cold or forked by the zygote


def _set_child_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


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


async def _serve(flags: Flags, bundle: str, listener: socket.socket, forker: Forker, logger) -> None:
    async with trio.open_nursery() as nursery:
        reaper = Reaper()
        await nursery.start(reaper.run)
        publisher = Publisher(os.environ.get("TTRPC_ADDRESS", ""), flags.namespace, logger)
        nursery.start_soon(publisher.run)
        service = TaskService(namespace=flags.namespace, root=paths.runtime_root(flags.namespace), forker=forker,
                              reaper=reaper, publisher=publisher, nursery=nursery, logger=logger,
                              log_bundle=bundle)
        server = Server(require_same_user=True)
        server.register("containerd.task.v2.Task", service.methods(task_v2_pb2))
        server.register("containerd.task.v3.Task", service.methods(task_v3_pb2))
        server_scope = trio.CancelScope()

        async def serve() -> None:
            with server_scope:
                await server.serve(trio.socket.from_stdlib_socket(listener))

        nursery.start_soon(serve)
        stop = trio.Event()

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    logger.info("received %s, exiting", signal.Signals(signum).name)
                    stop.set()

        async def on_shutdown() -> None:
            await service.shutdown_requested.wait()
            stop.set()

        async def on_idle() -> None:
            with trio.move_on_after(_grace()):
                await service.created_any.wait()
                return
            if not service.tasks:
                logger.warning("no Create within %.0f s of start, exiting", _grace())
                stop.set()

        nursery.start_soon(on_signals)
        nursery.start_soon(on_shutdown)
        nursery.start_soon(on_idle)
        logger.info("railcar shim serving bundle=%s", bundle)
        await stop.wait()
        await trio.sleep(0.05)  # let the Shutdown reply leave before the connection closes
        server_scope.cancel()
        publisher.close()
        with trio.move_on_after(EVENT_DRAIN_TIMEOUT):
            await publisher.drained()
        nursery.cancel_scope.cancel()


def run(flags: Flags) -> int:
    """Run the daemon until it is told to stop; returns the process exit code."""
    bundle = os.path.abspath(flags.bundle or os.getcwd())
    logger = shim_log.setup(bundle, flags.namespace, flags.debug)
    prctl.set_name(PROCESS_NAME)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    _set_child_subreaper()
    listener = _listener(flags)
    # Freeze before forking the forker, so that neither process's collector ever walks (and so
    # copies) the objects they share; a cold daemon's imports are frozen here too.
    gc.freeze()
    forker = Forker()
    forker.start(keep_fds=(0, 1, 2))
    try:
        trio.run(_serve, flags, bundle, listener, forker, logger)
    except BaseException:
        logger.exception("shim daemon failed")
        raise
    finally:
        path = listener.getsockname()
        listener.close()
        forker.close()
        if isinstance(path, str) and path:
            try:
                os.unlink(path)
            except OSError:
                pass
    logger.info("railcar shim exiting")
    return 0
