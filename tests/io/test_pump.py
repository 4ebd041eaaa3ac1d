"""The copy loops on their own: both paths byte-exact, and a failing target never blocks the producer."""

import os

import pytest
import trio

from railcar.io.pump import is_pipe, pump


async def _through_pump(payload: bytes, *, splice: bool | None, dst_broken: bool = False) -> bytes:
    """payload -> pipe -> pump -> pipe -> collected; a thread plays the producer with a blocking fd."""
    src_read, src_write = os.pipe()
    dst_read, dst_write = os.pipe()
    os.set_blocking(src_read, False)
    os.set_blocking(dst_write, False)
    os.set_blocking(dst_read, False)
    if dst_broken:
        os.close(dst_read)  # writes to dst now fail with EPIPE

    def produce() -> None:
        with os.fdopen(src_write, "wb") as f:
            f.write(payload)

    collected = bytearray()

    async def collect() -> None:
        while True:
            try:
                data = os.read(dst_read, 65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(dst_read)
                continue
            if not data:
                return
            collected.extend(data)

    async with trio.open_nursery() as nursery:
        if not dst_broken:
            nursery.start_soon(collect)

        async def forward() -> None:
            await pump(src_read, dst_write, label="test", splice=splice)
            trio.lowlevel.notify_closing(dst_write)
            os.close(dst_write)

        nursery.start_soon(forward)
        await trio.to_thread.run_sync(produce)
    os.close(src_read)
    if not dst_broken:
        os.close(dst_read)
    return bytes(collected)


@pytest.mark.parametrize("splice", [True, False, None], ids=["splice", "copy", "auto"])
async def test_both_paths_are_byte_exact(splice: bool | None) -> None:
    payload = os.urandom(3 << 20)
    assert await _through_pump(payload, splice=splice) == payload


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
async def test_failing_target_still_drains_the_source(splice: bool, caplog: pytest.LogCaptureFixture) -> None:
    """EPIPE on the target: the producer still finishes (the rest is discarded) and it is logged."""
    assert await _through_pump(os.urandom(1 << 20), splice=splice, dst_broken=True) == b""
    assert "writing failed" in caplog.text


def test_is_pipe() -> None:
    read_end, write_end = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    assert is_pipe(read_end) and is_pipe(write_end) and not is_pipe(null)
    for fd in (read_end, write_end, null):
        os.close(fd)
