"""Moving bytes from one fd to another inside trio, by splice(2) when both ends are pipes.

Both fds must never block: pipes, FIFOs and pty masters in non-blocking mode, or regular files.
Those in non-blocking mode must be *ours alone*: O_NONBLOCK lives in the open file description,
so setting it on an fd the container shares (its end of a pipe, a pty slave) would change what
the container sees. Our end of a pipe, a FIFO we opened ourselves, a pty master and a
file we opened are each a description nobody else holds, so railcar.io only ever makes those
non-blocking.

Memory stays bounded whatever the producer does: splice moves pages between pipe buffers without
touching our memory, and the copy path holds at most one CHUNK.

The pipes and FIFOs keep the kernel's capacity (64 KiB), as runc's shim leaves them: a process that
writes more waits for its reader, as under runc, rather than exit with output still on its way that
a paused client then loses (1 MiB pipes lost 1.4 of 1.5 MB behind a reader pausing 3 s, measured
through ctr). Wider pipes moved more per wakeup (ProcessIO 1680 against 1268 MiB/s in
benchmarks/io_bench.py), far above what containerd's client reads anyway.
"""

import errno
import fcntl
import logging
import os
import stat
import struct
import termios

import trio

log = logging.getLogger(__name__)

CHUNK = 1 << 16
"""Bytes per read on the copy path: the most memory one pump holds."""

SPLICE_CHUNK = 1 << 20
"""Bytes per splice call: costs no memory, and one call can empty any pipe."""

_YIELD_EVERY = 16
"""A busy pump yields to the trio scheduler after this many transfers, so that one fast
producer cannot starve the event loop, without paying a checkpoint per transfer."""

_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


def is_pipe(fd: int) -> bool:
    """Pipes and FIFOs: the only fds both ends of a splice-only path may be."""
    return stat.S_ISFIFO(os.fstat(fd).st_mode)


def pending(fd: int) -> int:
    """Bytes waiting in the pipe behind `fd` (FIONREAD): which end of a splice blocked, and how
    much of an output FIFO its client has not read yet."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


async def pump(src: int, dst: int, *, label: str, splice: bool | None = None) -> None:
    """Copy from `src` to `dst` until `src` reaches end of stream.

    `splice=None` picks splice(2) when both ends are pipes/FIFOs, else plain read/write; True or
    False forces a path (the benchmark compares them). EIO on read counts as end of stream: that is
    how a pty master reports that every slave fd was closed.

    If writing to `dst` fails (the container's stdin went away, a disk filled up), the failure is
    logged once under `label` and the rest of `src` is read and dropped: the producer must never
    block forever on a pipe nobody drains, and the caller still learns about EOF.
    """
    use_splice = is_pipe(src) and is_pipe(dst) if splice is None else splice
    if use_splice:
        try:
            await _splice_loop(src, dst)
            return
        except OSError as error:
            # splice cannot say which end failed; the copy loop below can, and nothing was lost
            # because a failed splice moves no bytes.
            log.debug("%s: splice failed (%s), copying instead", label, error)
    await _copy_loop(src, dst, label)


async def _splice_loop(src: int, dst: int) -> None:
    transfers = 0
    while True:
        try:
            moved = os.splice(src, dst, SPLICE_CHUNK, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            if pending(src):
                await trio.lowlevel.wait_writable(dst)
            else:
                await trio.lowlevel.wait_readable(src)
            continue
        if moved == 0:
            return
        transfers += 1
        if transfers % _YIELD_EVERY == 0:
            await trio.lowlevel.checkpoint()


async def _copy_loop(src: int, dst: int, label: str) -> None:
    target: int | None = dst  # None once writing failed: then the rest is dropped
    transfers = 0
    while True:
        try:
            data = os.read(src, CHUNK)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(src)
            continue
        except OSError as error:
            if error.errno == errno.EIO:
                return
            raise
        if not data:
            return
        if target is not None:
            try:
                await _write_all(target, data)
            except OSError as error:
                log.warning("%s: writing failed (%s); discarding the rest of the stream", label, error)
                target = None
        transfers += 1
        if transfers % _YIELD_EVERY == 0:
            await trio.lowlevel.checkpoint()


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
            continue
        view = view[written:]
