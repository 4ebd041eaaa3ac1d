"""The forker process: JSON requests with fds attached, errors reported, survives bad requests."""

import os

import pytest
import trio

from railcar.shim.forker import Forker, ForkerError


def _write(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    os.write(fds[0], args["text"].encode())
    return {"pid": os.getpid(), "got": len(fds)}, []


def _pipe(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    read_end, write_end = os.pipe()
    os.write(write_end, b"from the forker")
    os.close(write_end)
    return None, [read_end]


def _refuse(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    raise ForkerError("spec", "process.args: must not be empty", "process.args")


def _crash(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    raise KeyError("boom")


HANDLERS = {"write": _write, "pipe": _pipe, "refuse": _refuse, "crash": _crash}


@pytest.fixture
def forker():
    f = Forker(HANDLERS)
    pid = f.start()
    yield f
    f.close()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


async def test_requests_carry_fds_both_ways(forker: Forker) -> None:
    read_end, write_end = os.pipe()
    result, fds = await forker.call("write", {"text": "hello"}, [write_end])
    os.close(write_end)
    assert result["got"] == 1 and result["pid"] == forker.pid != os.getpid()
    assert os.read(read_end, 100) == b"hello"
    os.close(read_end)
    _, fds = await forker.call("pipe", {})
    assert len(fds) == 1
    with open(fds[0], "rb") as f:
        assert f.read() == b"from the forker"


async def test_errors_come_back_typed_and_the_forker_survives(forker: Forker) -> None:
    with pytest.raises(ForkerError) as info:
        await forker.call("refuse", {})
    assert (info.value.kind, info.value.path) == ("spec", "process.args")
    with pytest.raises(ForkerError, match="KeyError"):
        await forker.call("crash", {})
    with pytest.raises(ForkerError, match="unknown forker op 'nope'"):
        await forker.call("nope", {})
    _, fds = await forker.call("pipe", {})  # still serving
    assert len(fds) == 1
    os.close(fds[0])


async def test_concurrent_calls_are_serialised(forker: Forker) -> None:
    read_end, write_end = os.pipe()
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(forker.call, "write", {"text": f"{i};"}, [write_end])
    os.close(write_end)
    assert sorted(os.read(read_end, 100).decode().split(";")[:-1]) == ["0", "1", "2", "3", "4"]
    os.close(read_end)
