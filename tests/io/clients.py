"""The other side of railcar.io in tests: a client reading a FIFO, and stand-in "container" processes."""

import os
import subprocess
import sys

import trio

from railcar.io import ProcessIO


def open_reader(path: str) -> int:
    """Be the client: open a FIFO for reading, as containerd does before Create."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


async def read_to_eof(fd: int, limit: int | None = None) -> bytes:
    """Read from a client's FIFO reader until EOF (or `limit` bytes), then close it."""
    chunks: list[bytes] = []
    got = 0
    try:
        while limit is None or got < limit:
            try:
                data = os.read(fd, 65536 if limit is None else min(65536, limit - got))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            if not data:
                break
            chunks.append(data)
            got += len(data)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)
    return b"".join(chunks)


def container(script: str, stdio: tuple[int, int, int]) -> subprocess.Popen[bytes]:
    """A stand-in for the container process: Python running `script` with the given fds 0/1/2."""
    return subprocess.Popen([sys.executable, "-c", script], stdin=stdio[0], stdout=stdio[1], stderr=stdio[2])


async def wait(process: subprocess.Popen[bytes]) -> int:
    return await trio.to_thread.run_sync(process.wait)


async def run_and_read(pio: ProcessIO, script: str, reader: int) -> tuple[int, bytes]:
    """Run `script` behind `pio` and forward until the client's `reader` sees EOF.

    Returns the process's exit status and every byte the client read.
    """
    assert pio.container_stdio is not None
    process = container(script, pio.container_stdio)
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        received = await read_to_eof(reader)
    return await wait(process), received
