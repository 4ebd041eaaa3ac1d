"""file:// targets and terminal mode (pty echo, resize, EIO as end of stream)."""

import fcntl
import os
import struct
import termios
from collections.abc import Callable
from pathlib import Path

import trio

from railcar.io import ProcessIO

from .clients import container, open_reader, read_to_eof, wait


async def test_file_target_appends_both_streams(tmp_path: Path) -> None:
    log = tmp_path / "new" / "dirs" / "c.log"
    uri = f"file://{log}"
    log.parent.mkdir(parents=True)
    log.write_text("earlier\n")
    pio = await ProcessIO.open("", uri, uri, terminal=False)
    assert (pio.stdout_path, pio.stderr_path) == (str(log), str(log))  # what State reports
    assert pio.container_stdio is not None
    writer = container(
        "import os\nfor i in range(200):\n"
        "    os.write(1 + i % 2, b'%s %d\\n' % (b'out' if i % 2 == 0 else b'err', i))",
        pio.container_stdio,
    )
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        assert await wait(writer) == 0
        await pio.drained(timeout=30)
    await pio.aclose()
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier"
    expected = {f"{'out' if i % 2 == 0 else 'err'} {i}" for i in range(200)}
    assert len(lines) == 201 and set(lines[1:]) == expected  # every line whole, none lost
    for stream in ("out", "err"):  # each stream keeps its own order
        numbers = [int(line.split()[1]) for line in lines[1:] if line.startswith(stream)]
        assert numbers == sorted(numbers)


async def test_file_target_creates_parent_directories(tmp_path: Path) -> None:
    log = tmp_path / "a" / "b" / "c.log"
    pio = await ProcessIO.open("", f"file://{log}", "", terminal=False)
    assert (log.parent.stat().st_mode & 0o777, log.stat().st_mode & 0o777) == (0o755, 0o644)
    pio.close_container_side()
    await pio.aclose()


async def test_pty_echo_resize_and_eio(fifo: Callable[[str], str]) -> None:
    stdin, out, err = fifo("stdin"), fifo("stdout"), fifo("stderr")
    pio = await ProcessIO.open(stdin, out, err, terminal=True)
    assert pio.container_stdio is None
    pio.resize(80, 24)  # before attach: no console yet, nothing to do
    master, slave = os.openpty()
    pio.attach_console(master)
    pio.resize(132, 43)
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))
    assert (cols, rows) == (132, 43)
    assert not any(os.path.realpath(f"/proc/self/fd/{fd}") == err for fd in os.listdir("/proc/self/fd"))
    reader = open_reader(out)
    client = os.open(stdin, os.O_WRONLY)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        os.write(client, b"hello\n")
        echoed = b""
        while not echoed.endswith(b"\n"):
            await trio.lowlevel.wait_readable(reader)
            echoed += os.read(reader, 100)
        assert echoed == b"hello\r\n"  # the line discipline's echo, read from the master
        assert os.read(slave, 100) == b"hello\n"  # and the input reached the slave
        os.close(slave)  # the process is gone: the master reads EIO, which is end of stream
        assert await read_to_eof(reader) == b""
        await pio.drained(timeout=30)
        pio.close_stdin()
        os.close(client)
    await pio.aclose()


async def test_terminal_without_stdout_still_drains_the_master() -> None:
    pio = await ProcessIO.open("", "", "", terminal=True)
    master, slave = os.openpty()
    pio.attach_console(master)
    with trio.fail_after(60):  # fails instead of hanging if nobody reads the master
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pio.run)
            with os.fdopen(slave, "wb") as tty:  # more than a pty buffers: blocks unless someone reads
                await trio.to_thread.run_sync(tty.write, b"x" * 100000)
    await pio.aclose()
