"""ProcessIO: everything between one process's fds 0/1/2 and the targets its client named."""

import fcntl
import logging
import os
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from .binary_logger import BinaryLogger
from .fds import FdSet
from .pump import pending, pump
from .spawner import DefaultSpawner, Spawner
from .targets import (
    Mode,
    Sink,
    file_uri_path,
    open_output_file,
    open_output_path,
    open_stdin_fifo,
    output_mode,
    plain_path,
)

log = logging.getLogger(__name__)


@dataclass
class _Output:
    """One output stream being forwarded: our end of the process's pipe (or the pty master) to a sink."""

    name: str
    sink: Sink
    src: int | None = None
    owns_src: bool = True  # False for the pty master, which stdin also writes to
    done: trio.Event = field(default_factory=trio.Event)


class ProcessIO:
    """The stdio of one process (a container's init or an exec), from Create until Delete.

    Life cycle, as the shim drives it:
      pio = await ProcessIO.open(...)        targets opened (never blocks), logger started
      install pio.container_stdio as 0/1/2   (or the pty slave, then pio.attach_console(master))
      pio.close_container_side()             once the process exists
      nursery.start_soon(pio.run)            copy loops, until EOF everywhere
      await pio.drained()                    before publishing the exit
      await pio.flush()                      on Delete, then
      await pio.aclose()
    """

    logger_stop_timeout: float = 12.0
    """Seconds between SIGTERM and SIGKILL for a binary:// logger (containerd's value)."""

    client_wait: float = 10.0
    """Seconds `open` waits for the client to open an output FIFO for reading (see `_open_path`)."""

    def __init__(self, stdin: str, stdout: str, stderr: str, terminal: bool) -> None:
        """Use `ProcessIO.open`; this only records what was asked for."""
        self.stdin_path = stdin
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.container_stdio: tuple[int, int, int] | None = None
        self._terminal = terminal
        self._fds = FdSet()
        self._container_side: list[int] = []
        self._outputs: list[_Output] = []
        self._stdin_src: int | None = None
        self._stdin_holder: int | None = None
        self._stdin_dst: int | None = None
        self._console: int | None = None
        self._console_attached = trio.Event()
        self._logger: BinaryLogger | None = None
        self._run_scope: trio.CancelScope | None = None
        self._run_done = trio.Event()
        self._closed = False

    @classmethod
    async def open(
        cls,
        stdin: str,
        stdout: str,
        stderr: str,
        *,
        terminal: bool,
        container_id: str = "",
        namespace: str = "",
        spawner: Spawner | None = None,
    ) -> "ProcessIO":
        """Open every target and prepare the process's ends; raises StdioError naming a bad target.

        "" means no such stream (/dev/null for the process). stdout decides the scheme for both
        output streams, as in containerd: FIFO paths, `binary://` (one logger for both; it is
        started and ready when this returns) or `file://` (both appended to one file, whose bare
        path stdout_path/stderr_path then report). In terminal mode stderr is ignored: the pty
        carries both. The process's pipe ends are root's: the runtime hands them to the process's
        user (`runtime.container._give_stdio`), whose host uid only it knows.
        """
        self = cls(stdin, stdout, stderr, terminal)
        try:
            logger_env = {"CONTAINER_ID": container_id, "CONTAINER_NAMESPACE": namespace}
            await self._open(logger_env, spawner)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _open(self, logger_env: dict[str, str], spawner: Spawner | None) -> None:
        devnull: int | None = None

        def null() -> int:
            nonlocal devnull
            if devnull is None:
                devnull = self._fds.adopt(os.open(os.devnull, os.O_RDWR))
            return devnull

        def process_pipe(*, process_reads: bool) -> tuple[int, int]:
            """(process end, our non-blocking end) of a new pipe."""
            read_end, write_end = self._fds.pipe()
            theirs, ours = (read_end, write_end) if process_reads else (write_end, read_end)
            os.set_blocking(ours, False)
            return theirs, ours

        if self.stdin_path:
            stdin_fifo = plain_path(self.stdin_path, "stdin")
            self._stdin_src, self._stdin_holder = open_stdin_fifo(stdin_fifo, self._fds)
        sinks, logger_ends = await self._open_outputs(logger_env, spawner)
        if self._terminal:
            self._outputs = [_Output("stdout", sinks.get("stdout") or self._null_sink(), owns_src=False)]
            return

        stdio = []
        if self._stdin_src is not None:
            theirs, self._stdin_dst = process_pipe(process_reads=True)
            stdio.append(theirs)
        else:
            stdio.append(null())
        for name in ("stdout", "stderr"):
            sink = sinks.get(name)
            if name in logger_ends:
                stdio.append(logger_ends[name])
            elif sink is None:
                stdio.append(null())
            else:
                theirs, ours = process_pipe(process_reads=False)
                self._outputs.append(_Output(name, sink, ours))
                stdio.append(theirs)
        self.container_stdio = (stdio[0], stdio[1], stdio[2])
        self._container_side = list(dict.fromkeys(stdio))

    async def _open_outputs(
        self, logger_env: dict[str, str], spawner: Spawner | None
    ) -> tuple[dict[str, Sink], dict[str, int]]:
        """Sinks by stream name, and for binary:// the process's ends of the (started) logger's pipes."""
        mode = output_mode(self.stdout_path, self.stderr_path)
        targets = {"stdout": self.stdout_path}
        if not self._terminal:
            targets["stderr"] = self.stderr_path
        sinks: dict[str, Sink] = {}
        logger_ends: dict[str, int] = {}
        if mode is Mode.BINARY:
            out_read, out_write = self._fds.pipe()
            err_read, err_write = self._fds.pipe()
            self._logger = await BinaryLogger.start(
                self.stdout_path, spawner or DefaultSpawner(), self._fds,
                stdout_read=out_read, stderr_read=err_read, env=logger_env,
            )
            if self._terminal:
                self._fds.close(err_write)  # the pty carries both streams; the logger just sees EOF on fd 4
                os.set_blocking(out_write, False)
                sinks["stdout"] = Sink(self.stdout_path, out_write)
            else:
                logger_ends = {"stdout": out_write, "stderr": err_write}
        elif mode is Mode.FILE:
            shared = open_output_file(self.stdout_path, self._fds)
            sinks = {name: shared for name in targets}
            self.stdout_path = self.stderr_path = file_uri_path(self.stdout_path)
        elif mode is Mode.PATHS:
            by_path: dict[str, Sink] = {}
            deadline = trio.current_time() + self.client_wait   # for all of them together
            for name, target in targets.items():
                if target:
                    path = plain_path(target, name)
                    if path not in by_path:
                        by_path[path] = await self._open_path(path, deadline)
                    sinks[name] = by_path[path]
        for sink in sinks.values():
            sink.users += 1
        return sinks, logger_ends

    async def _open_path(self, path: str, deadline: float) -> Sink:
        """An output path's sink, once the client holds it open for reading if it is a FIFO.

        containerd's client opens its end of a FIFO in the background (ctr, CRI) and sends Create
        or Exec without waiting for that open. A process that wrote and exited before it happened
        lost its output: the exit was reported at once (nobody was reading), and Delete closed the
        FIFO with the output in it before the client's open (measured: ctr exec printed nothing
        in 6 of 480 runs while the host was busy). runc's shim opens the FIFO with a blocking open,
        which waits for the client's; this waits until `deadline` at most (`client_wait` seconds
        for all the FIFOs of a process), polling, and then keeps the output in the FIFO for a
        client that comes later."""
        delay = 0.0005
        while (sink := open_output_path(path, self._fds, need_client=trio.current_time() < deadline)) is None:
            await trio.sleep(delay)
            delay = min(delay * 2, 0.01)
        return sink

    def _null_sink(self) -> Sink:
        """Where a terminal's output goes when no stdout was given: it must still be read."""
        return Sink(os.devnull, self._fds.adopt(os.open(os.devnull, os.O_WRONLY)), users=1)

    def close_container_side(self) -> None:
        """Close our copies of the process's ends, once it holds its own: EOF then means it is done."""
        for fd in self._container_side:
            self._fds.close(fd)
        self._container_side = []

    def attach_console(self, master_fd: int) -> None:
        """Terminal mode: take ownership of the pty master, which run() then forwards both ways."""
        if not self._terminal or self._console is not None or self._closed:
            os.close(master_fd)
            raise RuntimeError("attach_console: ProcessIO is not an open terminal without a console")
        self._console = self._fds.adopt(master_fd)
        os.set_blocking(master_fd, False)  # the master's description is ours alone; the process has the slave
        self._outputs[0].src = master_fd
        if self._stdin_src is not None:
            self._stdin_dst = master_fd
        self._console_attached.set()

    async def run(self) -> None:
        """Forward everything until the outputs reached EOF and stdin ended (after close_stdin).

        In terminal mode this first waits for attach_console. Cancelled by aclose().
        """
        if self._run_scope is not None:
            raise RuntimeError("ProcessIO.run: already running")
        if self._closed:
            return
        try:
            with trio.CancelScope() as self._run_scope:
                if self._terminal:
                    await self._console_attached.wait()
                async with trio.open_nursery() as nursery:
                    for output in self._outputs:
                        nursery.start_soon(self._forward_output, output)
                    if self._stdin_src is not None:
                        nursery.start_soon(self._forward_stdin)
        finally:
            self._run_done.set()

    async def _forward_output(self, output: _Output) -> None:
        assert output.src is not None
        try:
            await pump(output.src, output.sink.fd, label=f"{output.name} -> {output.sink.target}")
        except OSError as error:
            log.warning("%s: reading failed (%s); stream ends here", output.name, error)
        finally:
            if output.owns_src:
                self._fds.close(output.src)
            output.sink.release(self._fds)
            output.done.set()

    async def _forward_stdin(self) -> None:
        assert self._stdin_src is not None and self._stdin_dst is not None
        try:
            await pump(self._stdin_src, self._stdin_dst, label=f"stdin {self.stdin_path}")
        except OSError as error:
            log.warning("stdin %s: reading failed (%s); stream ends here", self.stdin_path, error)
        finally:
            self._fds.close(self._stdin_src)
            if self._stdin_dst != self._console:
                self._fds.close(self._stdin_dst)  # the process now reads EOF

    async def drained(self, timeout: float = 2.0) -> None:
        """Return once stdout/stderr reached EOF, every byte was written to the targets, and a
        client reading an output FIFO has read it all.

        The last part is what makes the output reach the reader before the exit is reported.
        containerd's client library (1.6.0-1.6.21, 1.7.0-1.7.2; so ctr, CRI and dockerd built on
        it) closes a task's FIFOs in task.Delete, right after the exit, before reading them to
        EOF, and drops the tail it had not read yet: up to a FIFO's capacity. FIFOs give the writer
        no "emptied" event, so this polls how much is left unread (FIONREAD on our own reader).
        Output nobody reads (ctr run -d, a client gone) is not waited for; it stays in the FIFO
        (and what does not fit, in the pipe) for a client that comes back.

        Gives up after `timeout` seconds in all, because a background child that inherited the
        pipe can keep it open forever, or a client may hold the FIFO without reading; forwarding
        goes on after that. Nothing to wait for with binary:// outside terminal mode: the logger
        reads the pipes itself.
        """
        if self._closed:
            return
        with trio.move_on_after(timeout):
            for output in self._outputs:
                await self._forwarded(output)
            sinks = {id(o.sink): o.sink for o in self._outputs if o.sink.unread()}.values()
            read = [sink for sink in sinks if sink.read_by_others(self._fds)]
            await self._while(lambda: any(sink.unread() for sink in read))

    async def flush(self, timeout: float = 2.0) -> None:
        """Before Delete closes everything, as runc's shim waits (up to 2 s) for its copies: until
        what is still in our pipe (or pty) has gone on to its target, at most `timeout` seconds.
        Behind a client that paused for longer than `drained` waited, that rest would be lost.
        What is in a FIFO already is not waited for: it stays there for the client that holds
        the FIFO after we close our ends. Nor is what cannot move: output for a FIFO that no client
        holds (looked at again while waiting: a client may leave), and a pipe that a silent
        background child holds open."""
        if self._closed:
            return
        with trio.move_on_after(timeout):
            await self._while(lambda: any(self._on_its_way(output) for output in self._outputs))

    def _on_its_way(self, output: "_Output") -> bool:
        """Whether bytes wait in our pipe (or pty) for `output`'s copy, and can go on: its target
        is not a FIFO (a file, a logger's pipe), or a client holds the FIFO."""
        if output.done.is_set() or output.src is None:
            return False
        try:
            if not pending(output.src):
                return False
        except OSError:
            return False   # cannot tell: Delete must not fail over it
        return output.sink.reader is None or output.sink.read_by_others(self._fds)

    async def _while(self, busy: Callable[[], bool]) -> None:
        """Poll until `busy()` is false (pipes and FIFOs give no "emptied" event), every 0.5 ms at
        first, backing off to every 10 ms; or until aclose."""
        delay = 0.0005
        while not self._closed and busy():
            await trio.sleep(delay)
            delay = min(delay * 2, 0.01)

    async def _forwarded(self, output: "_Output") -> None:
        """Until `output` reached EOF with every byte written, unless it cannot: its FIFO holds
        output that nobody has open to read, so the copy waits for a client, not the other way."""
        while not output.done.is_set():
            with trio.move_on_after(0.05):
                await output.done.wait()
            if not output.done.is_set() and output.sink.unread() and not output.sink.read_by_others(self._fds):
                return

    def close_stdin(self) -> None:
        """CloseIO: drop our own stdin writer, so EOF reaches the process once the client's writer closes."""
        if self._stdin_holder is not None:
            self._fds.close(self._stdin_holder)

    def resize(self, width: int, height: int) -> None:
        """Set the pty window size (TIOCSWINSZ); a no-op without a console."""
        if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
            raise ValueError(f"resize: width {width} and height {height} must be in 0..65535")
        if self._console is not None:
            fcntl.ioctl(self._console, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def aclose(self) -> None:
        """Stop forwarding, close every fd we own, and stop a binary:// logger (TERM, then KILL)."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):  # bounded: run() ends on cancel, the logger on SIGKILL
            if self._run_scope is not None:
                self._run_scope.cancel()
                await self._run_done.wait()
            for output in self._outputs:
                output.done.set()
                output.sink.reader = None  # closed below: its number may be reused by anything
            self._fds.close_all()
            if self._logger is not None:
                await self._logger.stop(self.logger_stop_timeout)
