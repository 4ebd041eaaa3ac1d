"""FIFO mode end to end: a real child process writes into ProcessIO's pipes, a client reads the FIFOs."""

import errno
import fcntl
import hashlib
import os
import signal
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from railcar.io import ProcessIO
from railcar.io.pump import pending

from .clients import container, open_reader, read_to_eof, run_and_read, wait

MB = 1 << 20
DEFAULT_PIPE_SIZE = 16 * os.sysconf("SC_PAGE_SIZE")   # the kernel's capacity for a new pipe


async def test_100_mb_arrive_byte_exact(fifo: Callable[[str], str], tmp_path: Path) -> None:
    block = os.urandom(MB)
    (tmp_path / "block").write_bytes(block)
    out = fifo("stdout")
    pio = await ProcessIO.open("", out, "", terminal=False)
    assert pio.container_stdio is not None
    status, received = await run_and_read(pio, f"import sys; b = open({str(tmp_path / 'block')!r}, 'rb').read()\n"
                                                "for _ in range(100): sys.stdout.buffer.write(b)", open_reader(out))
    assert status == 0
    assert len(received) == 100 * MB
    assert hashlib.sha256(received).digest() == hashlib.sha256(block * 100).digest()
    await pio.aclose()


async def test_thousand_writers_that_exit_at_once_lose_nothing(fifo: Callable[[str], str]) -> None:
    out = fifo("stdout")
    pio = await ProcessIO.open("", out, "", terminal=False)
    assert pio.container_stdio is not None
    status, received = await run_and_read(pio, "import os\n"
                                                "for i in range(1000):\n"
                                                "    if os.fork() == 0:\n"
                                                "        os.write(1, b'writer %d\\n' % i); os._exit(0)\n"
                                                "for _ in range(1000): os.wait()", open_reader(out))
    assert status == 0
    lines = received.decode().splitlines()
    assert sorted(lines) == sorted(f"writer {i}" for i in range(1000))
    await pio.aclose()


async def test_late_reader_gets_everything(fifo: Callable[[str], str]) -> None:
    """4 MiB with nobody reading: the FIFO and the pipe fill up, the writer blocks, nothing is lost."""
    out = fifo("stdout")
    pio = await ProcessIO.open("", out, "", terminal=False)
    assert pio.container_stdio is not None
    payload = bytes(range(256)) * (4 * MB // 256)
    script = f"import sys; sys.stdout.buffer.write(bytes(range(256)) * {4 * MB // 256})"
    writer = container(script, pio.container_stdio)
    probe = os.dup(pio.container_stdio[1])  # to watch the process's pipe fill up
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        while pending(probe) < fcntl.fcntl(probe, fcntl.F_GETPIPE_SZ):  # FIFO and pipe full: writer stuck
            await trio.sleep(0.01)
        os.close(probe)
        received = await read_to_eof(open_reader(out))
    assert await wait(writer) == 0
    assert received == payload
    await pio.aclose()


async def test_open_waits_for_the_client_to_open_its_fifo(fifo: Callable[[str], str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """containerd's client opens its end of the FIFO in the background and sends Exec (or Create)
    without waiting for that. A process that printed a line and exited at once, before the client's
    open, lost the line: nobody was reading, so the exit went out at once, and Delete closed the
    FIFO before the client came. open waits for the client, as runc's shim does."""
    monkeypatch.setattr(ProcessIO, "client_wait", 30.0)
    out = fifo("stdout")
    client: list[int] = []

    async def open_late() -> None:
        await trio.sleep(0.2)
        client.append(open_reader(out))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_late)
        pio = await ProcessIO.open("", out, "", terminal=False)
        assert client, "open returned before the client opened its FIFO"
    assert pio.container_stdio is not None
    process = container("print('quick')", pio.container_stdio)
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        assert await wait(process) == 0
        await pio.drained()
        await pio.flush()
        await pio.aclose()
    assert await read_to_eof(client[0]) == b"quick\n"


async def test_open_waits_for_clients_that_never_come_once_for_all_fifos(fifo: Callable[[str], str],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`client_wait` bounds the wait for all of a process's FIFOs together, not for each one."""
    monkeypatch.setattr(ProcessIO, "client_wait", 1.0)
    started = trio.current_time()
    pio = await ProcessIO.open("", fifo("stdout"), fifo("stderr"), terminal=False)
    waited = trio.current_time() - started
    await pio.aclose()
    assert 1.0 <= waited < 1.8   # (2 s: a wait for each)


async def test_reader_that_leaves_and_returns_does_not_kill_the_writer(fifo: Callable[[str], str]) -> None:
    out = fifo("stdout")
    pio = await ProcessIO.open("", out, "", terminal=False)
    assert pio.container_stdio is not None
    payload = b"".join(b"line %06d\n" % i for i in range(400000))  # 4.8 MB: more than pipe + FIFO hold
    first_reader = open_reader(out)
    writer = container(
        "import sys\nfor i in range(400000): sys.stdout.buffer.write(b'line %06d\\n' % i)",
        pio.container_stdio,
    )
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        first = await read_to_eof(first_reader, limit=10000)  # the client reads a little and goes away
        second = await read_to_eof(open_reader(out))  # ...and comes back
    assert await wait(writer) == 0  # no SIGPIPE
    assert first + second == payload
    await pio.aclose()


async def test_drained_returns_after_eof_or_timeout(fifo: Callable[[str], str]) -> None:
    """A background child holding the pipe must not hold up drained() beyond its timeout."""
    out = fifo("stdout")
    pio = await ProcessIO.open("", out, "", terminal=False)
    assert pio.container_stdio is not None
    background = os.dup(pio.container_stdio[1])
    pio.close_container_side()
    reader = open_reader(out)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        os.write(background, b"last words\n")
        await pio.drained(timeout=0.05)  # returns although the pipe is still open
        os.close(background)
        assert await read_to_eof(reader) == b"last words\n"  # then EOF: the FIFO's writer was closed
        with trio.fail_after(1):
            await pio.drained(timeout=30)  # at once: all written, all read
    await pio.aclose()


@asynccontextmanager
async def exited_with_output(fifo: Callable[[str], str], size: int, *,
                             client: bool) -> AsyncIterator[tuple[ProcessIO, str, int]]:
    """ProcessIO forwarding a process that wrote `size` bytes to stdout and exited (at most what
    the FIFO and the pipe hold, 64 KiB each): what the FIFO holds of it is there by the time the
    block runs, the rest in the pipe. The client's reader is open, or with `client=False` was open
    at Create and has left (-1)."""
    out = fifo("stdout")
    pio = await ProcessIO.open("", out, "", terminal=False)
    assert pio.container_stdio is not None
    reader = open_reader(out)
    if not client:
        os.close(reader)
        reader = -1
    process = container(f"import sys; sys.stdout.buffer.write(b'x' * {size})", pio.container_stdio)
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        assert await wait(process) == 0
        yield pio, out, reader
    await pio.aclose()


async def test_drained_waits_until_the_client_read_everything(fifo: Callable[[str], str]) -> None:
    """The exit is reported only after the client has the whole output: containerd's client
    (1.6.0-1.6.21) closes the FIFOs as soon as it deletes the exited task, and what it had not read
    by then would be lost. A client reading slowly is waited for."""
    async with exited_with_output(fifo, 120000, client=True) as (pio, _, reader):
        drained = trio.Event()

        async def drain() -> None:
            await pio.drained(timeout=30)
            drained.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            got = 0
            for _ in range(3):
                await trio.sleep(0.1)
                assert not drained.is_set()  # in the FIFO by now, but not all read
                got += len(await read_to_eof(os.dup(reader), limit=40000 - 1))
            with trio.fail_after(1):
                got += len(await read_to_eof(reader))
                await drained.wait()
        assert got == 120000


async def test_flush_lets_a_client_that_paused_read_the_rest_before_aclose(fifo: Callable[[str], str]) -> None:
    """Delete after an exit that `drained` published without the client (it paused for longer):
    flush waits for the client to read what is left in our pipe and in the FIFO, then aclose
    loses nothing (runc's shim waits up to 2 s for its copies before it closes)."""
    async with exited_with_output(fifo, 120000, client=True) as (pio, _, reader):
        await pio.drained(timeout=0.05)   # gives up: the client has not read yet
        got = bytearray()

        async def paused_client() -> None:
            await trio.sleep(0.3)
            got.extend(await read_to_eof(reader))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(paused_client)
                await pio.flush(timeout=30)
                await pio.aclose()
        assert len(got) == 120000


async def test_flush_leaves_what_is_in_the_fifo_to_a_client_that_does_not_read(fifo: Callable[[str], str]) -> None:
    """It stays there for that client after aclose: Delete is not held up for it."""
    async with exited_with_output(fifo, 1000, client=True) as (pio, _, reader):
        with trio.fail_after(1):
            await pio.drained(timeout=0.05)
            await pio.flush(timeout=30)
        await pio.aclose()
        assert len(await read_to_eof(reader)) == 1000


async def test_flush_does_not_wait_for_what_cannot_move(fifo: Callable[[str], str]) -> None:
    """Output nobody reads, and a pipe that a background child holds open without writing: Delete
    is not held up."""
    async with exited_with_output(fifo, 120000, client=False) as (pio, _, _):
        with trio.fail_after(1):
            await pio.flush(timeout=30)
        await pio.aclose()   # (its copy waits for a client that never comes)
    out = fifo("quiet")
    pio = await ProcessIO.open("", out, "", terminal=False)
    assert pio.container_stdio is not None
    reader = open_reader(out)
    background = os.dup(pio.container_stdio[1])   # a child that keeps stdout open, and is silent
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        with trio.fail_after(1):
            await pio.flush(timeout=30)
        await pio.aclose()
    os.close(background)
    os.close(reader)


async def test_drained_does_not_wait_for_a_client_that_is_gone(fifo: Callable[[str], str]) -> None:
    """ctr run -d, or a client gone: nobody has the FIFO open to read, so the exit is not held up,
    and the output stays in the FIFO for a client that comes back."""
    async with exited_with_output(fifo, 120000, client=False) as (pio, out, _):
        with trio.fail_after(1):
            await pio.drained(timeout=30)
        assert len(await read_to_eof(open_reader(out))) == 120000


async def test_drained_does_not_wait_for_output_stuck_in_a_fifo_nobody_reads(fifo: Callable[[str], str]) -> None:
    """ctr run -d with more output than the FIFO holds: the copy waits for a client that may come back,
    and the exit (here, of a process killed while blocked on its full pipe) is not held up meanwhile."""
    out = fifo("stdout")
    pio = await ProcessIO.open("", out, "", terminal=False)
    assert pio.container_stdio is not None
    os.close(open_reader(out))  # the client was there at Create and has left
    writer = container(f"import sys; sys.stdout.buffer.write(b'x' * {8 * MB})", pio.container_stdio)
    probe = os.dup(pio.container_stdio[1])
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        while pending(probe) < fcntl.fcntl(probe, fcntl.F_GETPIPE_SZ):  # FIFO full, then the pipe
            await trio.sleep(0.01)
        os.close(probe)
        writer.kill()
        assert await wait(writer) == -signal.SIGKILL
        with trio.fail_after(1):
            await pio.drained(timeout=30)
        received = await read_to_eof(open_reader(out))   # a client coming back gets what was kept
        assert 0 < len(received) < 8 * MB and set(received) == {ord("x")}
        await pio.aclose()


async def test_drained_after_aclose_leaves_the_fds_it_closed_alone(fifo: Callable[[str], str]) -> None:
    """An exec's exit can be waited for after its IO was closed (an init's Delete closes them): the
    number of the FIFO reader we closed may belong to someone else by then."""
    out = fifo("stdout")
    pio = await ProcessIO.open("", out, "", terminal=False)
    old_reader = pio._outputs[0].sink.reader
    assert old_reader is not None
    await pio.aclose()
    read, write = os.pipe()
    if read != old_reader:   # the number now is someone else's, with bytes in it
        os.dup2(read, old_reader)
        os.close(read)
    os.write(write, b"not ours")
    try:
        with trio.fail_after(1):
            await pio.drained(timeout=30)
        assert os.read(old_reader, 100) == b"not ours"
    finally:
        os.close(old_reader)
        os.close(write)


async def test_aclose_ends_the_wait_for_the_client(fifo: Callable[[str], str]) -> None:
    async with exited_with_output(fifo, 1000, client=True) as (pio, _, reader):
        with trio.fail_after(1):  # the client holds the FIFO without reading: only aclose ends the wait
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pio.aclose)
                await pio.drained(timeout=30)
        os.close(reader)


async def test_stdout_and_stderr_fifos(fifo: Callable[[str], str]) -> None:
    out, err = fifo("stdout"), fifo("stderr")
    pio = await ProcessIO.open("", out, err, terminal=False)
    assert pio.container_stdio is not None
    for fd in pio.container_stdio[1:]:
        st = os.fstat(fd)
        assert stat.S_ISFIFO(st.st_mode)
        assert os.get_blocking(fd)  # the process's end stays blocking
        assert fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) == DEFAULT_PIPE_SIZE  # as runc's: a writer waits for its reader
    assert stat.S_ISCHR(os.fstat(pio.container_stdio[0]).st_mode)  # no stdin: /dev/null
    readers = open_reader(out), open_reader(err)
    assert all(fcntl.fcntl(reader, fcntl.F_GETPIPE_SZ) == DEFAULT_PIPE_SIZE for reader in readers)  # FIFOs too
    writer = container("import os; os.write(1, b'to out'); os.write(2, b'to err')", pio.container_stdio)
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        assert await read_to_eof(readers[0]) == b"to out"
        assert await read_to_eof(readers[1]) == b"to err"
    assert await wait(writer) == 0
    await pio.aclose()


async def test_stdin_ends_only_after_close_stdin(fifo: Callable[[str], str]) -> None:
    stdin, out = fifo("stdin"), fifo("stdout")
    pio = await ProcessIO.open(stdin, out, "", terminal=False)
    assert pio.container_stdio is not None
    cat = container(
        "import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer, 1)", pio.container_stdio
    )
    pio.close_container_side()
    reader = open_reader(out)

    async def expect(data: bytes) -> None:
        got = b""
        while len(got) < len(data):
            await trio.lowlevel.wait_readable(reader)
            got += os.read(reader, 100)
        assert got == data

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        for word in (b"hello", b"again"):  # the client writes, leaves, reconnects: no EOF in between
            client = os.open(stdin, os.O_WRONLY)
            os.write(client, word)
            os.close(client)
            await expect(word)
        pio.close_stdin()
        assert await read_to_eof(reader) == b""  # cat saw EOF, exited, and stdout reached EOF
    assert await wait(cat) == 0
    await pio.aclose()


async def test_same_path_for_stdout_and_stderr_is_opened_once(fifo: Callable[[str], str]) -> None:
    out = fifo("both")
    pio = await ProcessIO.open("", out, out, terminal=False)
    assert pio.container_stdio is not None
    reader = open_reader(out)
    writer = container("import os; os.write(1, b'a'); os.write(2, b'b')", pio.container_stdio)
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        assert sorted(await read_to_eof(reader)) == sorted(b"ab")
    assert await wait(writer) == 0
    await pio.aclose()


async def test_null_io_gives_dev_null() -> None:
    pio = await ProcessIO.open("", "", "", terminal=False)
    assert pio.container_stdio is not None
    null = os.stat(os.devnull).st_rdev
    assert all(os.fstat(fd).st_rdev == null for fd in pio.container_stdio)
    assert (pio.stdin_path, pio.stdout_path, pio.stderr_path) == ("", "", "")
    pio.close_container_side()
    await pio.run()  # nothing to forward: returns at once
    await pio.drained()
    await pio.aclose()


async def test_close_stdin_before_any_client_gives_eof(fifo: Callable[[str], str]) -> None:
    stdin = fifo("stdin")
    pio = await ProcessIO.open(stdin, "", "", terminal=False)
    assert pio.container_stdio is not None
    assert os.get_blocking(pio.container_stdio[0])
    cat = container("import sys; sys.exit(len(sys.stdin.buffer.read()))", pio.container_stdio)
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        pio.close_stdin()
    assert await wait(cat) == 0  # EOF with nothing read
    await pio.aclose()


async def test_aclose_stops_a_pump_blocked_on_a_full_fifo(fifo: Callable[[str], str]) -> None:
    """Nobody ever reads: aclose still returns, closes every fd (leak check), and the writer sees EPIPE."""
    out = fifo("stdout")
    pio = await ProcessIO.open("", out, "", terminal=False)
    assert pio.container_stdio is not None
    script = (
        f"import errno, os\ndata = memoryview(b'x' * {4 * MB})\n"
        "try:\n    while data: data = data[os.write(1, data):]\n"
        "except BrokenPipeError: raise SystemExit(errno.EPIPE)"
    )
    writer = container(script, pio.container_stdio)
    probe = os.dup(pio.container_stdio[1])
    pio.close_container_side()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        while pending(probe) < fcntl.fcntl(probe, fcntl.F_GETPIPE_SZ):
            await trio.sleep(0.01)
        os.close(probe)
        await pio.drained(timeout=0.05)  # gives up: the bytes cannot reach the FIFO
        await pio.aclose()  # cancels run(), so the nursery can finish
    assert await wait(writer) == errno.EPIPE
