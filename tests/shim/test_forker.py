"""The forker process: JSON requests with fds attached, errors reported, survives bad requests, and
runs each request in a fresh worker (so the forker itself stays a clean copy)."""

import itertools
import json
import mmap
import os
import resource
import select
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest
import trio

from tests.polling import eventually

from railcar.shim import fdlimit
from railcar.shim import forker as forker_module
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


_touched: list[int] = []


def _touch(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    """Leaves a trace in the process that ran it: the next request sees it only in the same process."""
    _touched.append(os.getpid())
    return {"pid": os.getpid(), "parent": os.getppid(), "seen": list(_touched)}, []


def _die(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    os.kill(os.getpid(), signal.SIGKILL)
    return None, []


def _size(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    return len(args["text"]), []


def _echo(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    return args["text"], []


def _refuse_quoting(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    path = args.get("path", "process.env[0]")
    raise ForkerError("spec", f"{path}: must look like KEY=VALUE, got {args['text']!r}", path)


def _exit3(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    os._exit(3)  # the status of a worker that retired idle: but this one had a request


def _say(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    os.write(2, args["text"].encode())
    return None, []


def _meet(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    """Arrive in `dir`, then wait until `count` workers have: how many did."""
    os.makedirs(args["dir"], exist_ok=True)
    Path(args["dir"], str(os.getpid())).touch()
    deadline = time.monotonic() + args.get("patience", 10)
    while len(os.listdir(args["dir"])) < args["count"]:
        if time.monotonic() > deadline:
            raise ForkerError("internal", "gave up waiting")
        time.sleep(0.01)
    return len(os.listdir(args["dir"])), []


def _alone(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    """Fails if another worker is inside at the same time; notes the order of arrival."""
    inside = Path(args["dir"], "inside")
    inside.touch(exist_ok=False)
    time.sleep(args.get("nap", 0.05))
    with open(Path(args["dir"], "order"), "a") as f:
        f.write(str(args["n"]))
    inside.unlink()
    return None, []


def _count(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    """Appends its number to `log`: what ran, and how many times."""
    with open(args["log"], "a") as f:
        f.write(f"{args['n']}\n")
    return {"pid": os.getpid(), "parent": os.getppid()}, []


def _mark(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    Path(args["path"]).touch()
    return None, []


HANDLERS = {"echo": _echo, "refuse_quoting": _refuse_quoting, "count": _count, "mark": _mark, "meet": _meet, "alone": _alone, "write": _write, "pipe": _pipe, "refuse": _refuse, "crash": _crash,
            "touch": _touch, "die": _die, "exit3": _exit3, "say": _say, "size": _size}


@pytest.fixture
def forker():
    f = Forker(HANDLERS, spare_idle=0.2)
    pid = f.start()
    yield f
    f.close()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


async def test_requests_carry_fds_both_ways(forker: Forker) -> None:
    read_end, write_end = os.pipe()
    result, fds = await forker.call("write", {"text": "hello"}, [write_end])
    os.close(write_end)
    assert result["got"] == 1 and result["pid"] not in (forker.pid, os.getpid())
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


async def test_concurrent_calls_are_all_served(forker: Forker) -> None:
    read_end, write_end = os.pipe()
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(forker.call, "write", {"text": f"{i};"}, [write_end])
    os.close(write_end)
    assert sorted(os.read(read_end, 100).decode().split(";")[:-1]) == ["0", "1", "2", "3", "4"]
    os.close(read_end)


async def test_calls_for_different_containers_run_at_once(forker: Forker, tmp_path: Path) -> None:
    """Each of three calls waits, in its worker, until all three have arrived: only concurrent
    workers get there (one at a time, the first would give up waiting)."""
    results = []

    async def meet(cid: str) -> None:
        results.append((await forker.call("meet", {"id": cid, "dir": str(tmp_path), "count": 3}))[0])

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for cid in ("a", "b", "c"):
                nursery.start_soon(meet, cid)
    assert sorted(results) == [3, 3, 3]
    assert len(set(os.listdir(tmp_path))) == 3  # three workers


async def test_each_of_many_big_concurrent_calls_gets_its_own_reply(forker: Forker) -> None:
    """Six requests of 600 KiB and more fill the socket's buffer: the calls take turns to send,
    and each reply reaches its own caller."""
    results = {}

    async def size(i: int) -> None:
        results[i] = (await forker.call("size", {"id": f"c{i}", "text": "x" * ((600 << 10) + i)}))[0]

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(size, i)
    assert results == {i: (600 << 10) + i for i in range(6)}


async def test_a_call_waiting_for_its_containers_turn_can_be_cancelled_and_never_runs(
        forker: Forker, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forker.call, "alone", {"id": "busy", "dir": str(tmp_path), "n": 0, "nap": 0.5})
        await trio.sleep(0.1)
        with trio.move_on_after(0.1) as waited:
            await forker.call("alone", {"id": "busy", "dir": str(tmp_path), "n": 1})
        assert waited.cancelled_caught
    assert (tmp_path / "order").read_text() == "0"  # the cancelled call was never sent
    assert forker._in_order == {}


async def test_calls_for_one_container_run_one_at_a_time_in_order(forker: Forker, tmp_path: Path) -> None:
    """(The runtime's state of a container must not be written by two workers at once.)"""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(forker.call, "alone", {"id": "same", "dir": str(tmp_path), "n": i})
                await trio.sleep(0)  # sent in this order
    assert (tmp_path / "order").read_text() == "0123"
    failures = []

    async def meet() -> None:  # the meeting cannot happen in one turn
        try:
            await forker.call("meet", {"id": "same", "dir": str(tmp_path / "m"), "count": 2, "patience": 0.3})
        except ForkerError as e:
            failures.append(e.message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(meet)
        nursery.start_soon(meet)
    assert failures == ["gave up waiting"]  # the second came after the first had given up


async def test_a_worker_that_dies_while_others_work_fails_only_its_call(forker: Forker, tmp_path: Path) -> None:
    outcomes = {}

    async def call(cid: str, op: str) -> None:
        try:
            outcomes[cid] = (await forker.call(op, {"id": cid, "dir": str(tmp_path), "count": 2}))[0]
        except ForkerError as e:
            outcomes[cid] = e.message

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "one", "meet")
            nursery.start_soon(call, "dies", "die")
            nursery.start_soon(call, "two", "meet")
    assert outcomes == {"one": 2, "two": 2, "dies": "the forker's worker was killed by signal 9"}
    await trio.sleep(0.3)
    assert _nothing_queued(forker)


async def test_each_request_runs_in_a_fresh_worker(forker: Forker) -> None:
    first, _ = await forker.call("touch", {})
    second, _ = await forker.call("touch", {})
    assert first["pid"] != second["pid"]
    assert first["seen"] == [first["pid"]] and second["seen"] == [second["pid"]]  # nothing carried over
    assert _touched == []  # nor did anything run here


def _nothing_queued(forker: Forker) -> bool:
    """No reply waits on the daemon's end (an extra one would be dropped as late, unseen)."""
    try:
        forker._link.sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False


async def test_a_worker_killed_mid_request_is_reported_and_the_forker_goes_on(forker: Forker) -> None:
    with pytest.raises(ForkerError, match="worker was killed by signal 9") as info:
        await forker.call("die", {})
    assert info.value.kind == "internal"
    with pytest.raises(ForkerError, match="worker exited with status 3"):
        await forker.call("exit3", {})
    null = os.open(os.devnull, os.O_WRONLY)
    result, _ = await forker.call("write", {"text": "still here"}, [null])
    os.close(null)
    assert result["got"] == 1


async def test_every_worker_logs_where_the_daemon_does_now(forker: Forker) -> None:
    """Each request carries the daemon's fd 2, so a worker forked before the daemon moved its log
    (a spare daemon's, a grouped daemon whose log bundle went away) still logs to the new place."""
    saved = os.dup(2)
    first_read, first_write = os.pipe()
    second_read, second_write = os.pipe()
    try:
        os.dup2(first_write, 2)
        await forker.call("say", {"text": "one;"})
        os.dup2(second_write, 2)
        await forker.call("say", {"text": "two"})
    finally:
        os.dup2(saved, 2)
        for fd in (saved, first_write, second_write):
            os.close(fd)
    assert os.read(first_read, 100) == b"one;"
    assert os.read(second_read, 100) == b"two"
    os.close(first_read)
    os.close(second_read)


async def test_a_spare_killed_before_it_took_a_request_fails_nothing(forker: Forker) -> None:
    assert eventually(lambda: len(_workers_of(forker.pid)) == 1)
    [ready] = _workers_of(forker.pid)
    os.kill(ready, signal.SIGKILL)
    assert eventually(lambda: ready not in _workers_of(forker.pid))
    served, _ = await forker.call("touch", {})
    assert served["pid"] not in (ready, forker.pid)
    await trio.sleep(0.3)
    assert _nothing_queued(forker)


def _close_replaced(forker: Forker, old: int) -> None:
    """Close `forker`, whose first forker `old` the test killed and reaped: its new one, if any,
    exits cleanly once its socket is closed."""
    forker.close()
    if forker.pid != old:
        _, status = os.waitpid(forker.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


async def test_a_forker_that_died_is_replaced_and_what_its_workers_took_is_answered(tmp_path: Path) -> None:
    """After `respawn`, a request a worker of the dead forker had taken is answered, and so is the
    one its waiting worker takes next; the requests no worker took go to the new forker, once no
    worker of the old one is left to take them; and so do later ones. Each runs exactly once."""
    forker = Forker(HANDLERS, spare_idle=5)
    old = forker.start()
    old_link = forker._link
    results: dict[str, object] = {}
    log = tmp_path / "log"

    async def call(name: str, op: str, args: dict) -> None:
        try:
            results[name] = (await forker.call(op, args))[0]
        except ForkerError as e:
            results[name] = e

    try:
        async with trio.open_nursery() as nursery:
            busy = tmp_path / "busy"
            nursery.start_soon(call, "busy", "meet", {"dir": str(busy), "count": 2})
            assert await trio.to_thread.run_sync(eventually, lambda: busy.is_dir() and len(os.listdir(busy)) == 1)
            assert await trio.to_thread.run_sync(eventually, lambda: len(_workers_of(old)) == 2)  # and one waits
            os.kill(old, signal.SIGKILL)
            os.waitpid(old, 0)
            for n in range(10):
                nursery.start_soon(call, str(n), "count", {"log": str(log), "n": n})
            await trio.sleep(0.3)  # all sent; the waiting worker took one of them
            new = forker.respawn()
            assert new not in (old, 0) and forker.pid == new
            (busy / "go").touch()
        assert results.pop("busy") == 2
        assert sorted(map(int, log.read_text().split())) == list(range(10))  # each ran, and once
        by_old = [name for name, result in results.items() if result["parent"] != new]
        assert len(by_old) == 1 and len(results) == 10, results  # the old waiting worker's, the rest new ones'
        assert old_link.sock.fileno() == -1  # closed once its last request was answered
        result, _ = await forker.call("touch", {})
        assert result["parent"] == new
    finally:
        _close_replaced(forker, old)


async def test_a_request_that_had_not_left_when_the_forker_was_replaced_goes_to_the_new_one() -> None:
    forker = Forker(HANDLERS)
    old = forker.start()
    old_link = forker._link
    try:
        os.kill(old, signal.SIGKILL)
        os.waitpid(old, 0)
        async with trio.open_nursery() as nursery:
            await old_link.sending.acquire()  # the call waits to send, as behind a full socket
            results = []

            async def call() -> None:
                results.append((await forker.call("touch", {}))[0])

            nursery.start_soon(call)
            await trio.sleep(0.1)
            new = forker.respawn()
            old_link.sending.release()
        assert results and results[0]["pid"] != new
        assert old_link.sock.fileno() == -1
    finally:
        forker.close()
        _, status = os.waitpid(forker.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


async def _killed_without_workers(forker: Forker) -> int:
    """Start `forker`, wait until no worker of it is left (its first serves a request, the spare
    forked then retires), then kill and reap it: nothing holds its socket any more. Its pid."""
    pid = forker.start()
    first, _ = await forker.call("touch", {})
    with trio.fail_after(10):   # (polled here: a trio thread would make the respawn's fork another kind)
        while not [w for w in _workers_of(pid) if w != first["pid"]]:   # the spare, forked once the first took it
            await trio.sleep(0.01)
        while _workers_of(pid):
            await trio.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return pid


async def test_a_request_that_finds_no_forker_waits_for_the_new_one() -> None:
    """A forker that died with no worker waiting leaves nothing to take a request (the send fails at
    once): the request waits for the daemon's new forker, instead of failing in the moment before."""
    forker = Forker(HANDLERS, spare_idle=0.3)
    old = await _killed_without_workers(forker)
    old_link = forker._link
    try:
        results = []
        async with trio.open_nursery() as nursery:
            async def call() -> None:
                results.append((await forker.call("touch", {}))[0])

            nursery.start_soon(call)
            await trio.sleep(0.3)
            assert not results
            new = forker.respawn()
            with trio.fail_after(1):   # woken by the new forker, not by the end of its wait
                while not results:
                    await trio.sleep(0.01)
        assert results[0]["pid"] not in (old, new)
        assert old_link.sock.fileno() == -1
    finally:
        _close_replaced(forker, old)


async def test_a_request_waiting_for_a_new_forker_can_be_cancelled_and_never_runs(tmp_path: Path) -> None:
    """Nothing has left while a request waits for the daemon's new forker: a cancellation (containerd
    gave up on the call) takes effect then, not once the wait is over, and the new forker never
    runs that request."""
    forker = Forker(HANDLERS, spare_idle=0.3)
    old = await _killed_without_workers(forker)
    mark = tmp_path / "ran"
    try:
        with trio.move_on_after(0.3) as waiting:
            await forker.call("mark", {"path": str(mark)})
        assert waiting.cancelled_caught
        new = forker.respawn()
        result, _ = await forker.call("touch", {})
        assert result["parent"] == new and not mark.exists()
    finally:
        _close_replaced(forker, old)


async def test_once_the_daemon_gives_up_on_its_forker_requests_fail_at_once() -> None:
    """`abandon` (the daemon exits: its forker died again at once, or none can be forked): a request
    waiting for a new forker fails now, and so does a later one, without the wait."""
    forker = Forker(HANDLERS, spare_idle=0.3)
    try:
        await _killed_without_workers(forker)
        failures = []
        async with trio.open_nursery() as nursery:
            async def call() -> None:
                with pytest.raises(ForkerError, match="the forker process is gone") as e:
                    await forker.call("touch", {})
                failures.append(e.value)

            nursery.start_soon(call)
            await trio.sleep(0.3)
            assert not failures
            with trio.fail_after(1):
                forker.abandon()
                while not failures:
                    await trio.sleep(0.01)
                await call()
        assert len(failures) == 2
    finally:
        forker.close()


def test_a_forker_that_cannot_be_forked_leaves_nothing_open(monkeypatch) -> None:
    forker = Forker(HANDLERS)

    def refused() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    before = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(forker_module, "bare_fork", refused)
    with pytest.raises(BlockingIOError) as info:  # which, as the daemon's retries do, keeps the frames
        forker.start()
    assert set(os.listdir("/proc/self/fd")) == before and forker.pid == 0
    assert info.value.errno == 11


async def test_a_worker_killed_before_it_took_its_request_leaves_it_to_the_next(monkeypatch, tmp_path: Path) -> None:
    """A worker notes a request's number before it takes it off the socket: if it dies in between,
    the forker sees the request still there and does not answer it; the next worker serves it."""
    died = tmp_path / "died"
    real_recv_fds = socket.recv_fds
    here = os.getpid()

    def recv_fds_once_fatal(*args, **kwargs):  # patched in the workers too (forked after this)
        if os.getpid() != here and not died.exists():
            died.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_recv_fds(*args, **kwargs)

    monkeypatch.setattr(socket, "recv_fds", recv_fds_once_fatal)
    forker = Forker(HANDLERS, spare_idle=0.2)
    forker.start()
    try:
        with trio.fail_after(10):
            served, _ = await forker.call("touch", {})
        assert died.exists() and served["pid"] != forker.pid
        await trio.sleep(0.3)
        assert _nothing_queued(forker)
    finally:
        forker.close()
        assert os.waitstatus_to_exitcode(os.waitpid(forker.pid, 0)[1]) == 0


async def test_a_workers_exit_is_never_handled_before_its_note(monkeypatch) -> None:
    """The forker may see a worker's exit in the same poll that missed its note (the worker wrote
    the note and exited in between). Played here by a poll that never reports the notes: the
    forker must read them anyway once it reaped an exit, and answer nothing twice."""
    real_poll = select.poll

    class NotesUnseen:
        def __init__(self) -> None:
            self._poll, self._first = real_poll(), None

        def register(self, fd, events) -> None:
            self._first = fd if self._first is None else self._first  # the notes pipe comes first
            self._poll.register(fd, events)

        def poll(self, *args):
            return [(fd, ev) for fd, ev in self._poll.poll(*args) if fd != self._first]

    monkeypatch.setattr(select, "poll", NotesUnseen)  # in the forker, forked after this
    forker = Forker(HANDLERS, spare_idle=0.2)
    forker.start()
    try:
        with trio.fail_after(20):
            pids = {(await forker.call("touch", {}))[0]["pid"] for _ in range(3)}
        assert len(pids) == 3
        await trio.sleep(0.3)
        assert _nothing_queued(forker)  # no second answer for a request its worker had answered
    finally:
        forker.close()
        assert os.waitstatus_to_exitcode(os.waitpid(forker.pid, 0)[1]) == 0


async def test_a_request_of_megabytes_is_served_with_its_fds(forker: Forker) -> None:
    """An exec's process spec carries the container's whole environment: Kubernetes' service
    variables can make it megabytes, which runc's exec takes (the kernel allows 2 MiB of arguments
    and environment, containerd's ttrpc 4 MiB a message). Such a request goes in a memfd; the
    handler sees its own fds only, and the daemon keeps no copy of the memfd open."""
    before = set(os.listdir("/proc/self/fd"))
    for size in (600 << 10, 3 << 20):
        assert (await forker.call("size", {"text": "x" * size}))[0] == size
    out = os.memfd_create("test-output")
    try:
        result, _ = await forker.call("write", {"text": "y" * (2 << 20)}, [out])
        assert result["got"] == 1 and os.fstat(out).st_size == 2 << 20
    finally:
        os.close(out)
    assert (await forker.call("size", {"text": "still"}))[0] == 5
    assert set(os.listdir("/proc/self/fd")) == before


async def test_a_reply_fits_in_one_message_whatever_the_request_quoted(forker: Forker) -> None:
    """An error can quote a request's value, and a request can be megabytes: its text comes back
    shortened (start and end), not as a worker that could not answer; a result too big for a
    message is refused as such (none is: this is the bound)."""
    with pytest.raises(ForkerError) as info:
        await forker.call("refuse_quoting", {"text": "x" * (300 << 10)})
    assert (info.value.kind, info.value.path) == ("spec", "process.env[0]")
    assert info.value.message.startswith("process.env[0]: must look like KEY=VALUE, got 'xxx")
    assert "characters left out" in info.value.message and len(info.value.message) < 5000
    smileys = "\U0001F600" * 100_000  # (each takes 12 bytes in JSON's escapes, 4 in UTF-8)
    with pytest.raises(ForkerError) as info:  # the field's name quotes a value too (an annotation's key)
        await forker.call("refuse_quoting", {"text": smileys, "path": f"annotations.{smileys}"})
    assert info.value.kind == "spec" and info.value.path.startswith("annotations.\U0001F600")
    with pytest.raises(ForkerError, match="the forker's reply of .* bytes is over 65536"):
        await forker.call("echo", {"text": "y" * (100 << 10)})
    assert (await forker.call("echo", {"text": "still"}))[0] == "still"


async def test_more_fds_than_a_request_carries_fail_before_anything_is_sent(forker: Forker) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        with pytest.raises(ForkerError, match="at most 16 fds"):
            await forker.call("write", {"text": "x"}, [null] * 17)
    finally:
        os.close(null)


def _workers_of(pid: int) -> list[int]:
    return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]


async def test_a_spare_worker_waits_only_while_requests_keep_coming(forker: Forker) -> None:
    assert eventually(lambda: len(_workers_of(forker.pid)) == 1)  # one is ready before any request
    [ready] = _workers_of(forker.pid)
    await trio.sleep(0.5)  # longer than spare_idle: before the first request, it waits however long
    assert _workers_of(forker.pid) == [ready]
    first, _ = await forker.call("touch", {})
    assert first["pid"] == ready
    # the next is forked once the first took its request
    assert eventually(lambda: len(_workers_of(forker.pid)) == 1 and ready not in _workers_of(forker.pid))
    [spare] = _workers_of(forker.pid)
    second, _ = await forker.call("touch", {})
    assert second["pid"] == spare
    assert eventually(lambda: _workers_of(forker.pid) == [], timeout=5)  # retired after 0.2 s idle
    third, _ = await forker.call("touch", {})  # forked on demand
    assert third["pid"] not in (first["pid"], second["pid"], forker.pid)


async def test_a_late_reply_is_told_apart_by_its_sequence_number() -> None:
    """A worker killed just after it answered makes the forker answer again; the daemon must drop
    that stale reply (and its fds) instead of taking it for the next call's."""
    forker = Forker(HANDLERS)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    # the test plays the forker on `theirs`
    forker._link = forker_module._Link(ours, 0, mmap.mmap(-1, mmap.PAGESIZE), 1 << 16, itertools.count(1))
    async with trio.open_nursery() as nursery:
        async def play_forker() -> None:
            for _ in range(2):
                data, fds, _, _ = await trio.to_thread.run_sync(socket.recv_fds, theirs, 1 << 16, 4)
                for fd in fds:
                    os.close(fd)
                (seq,) = forker_module._SEQ.unpack_from(data)
                request = json.loads(data[forker_module._SEQ.size:])
                stale_keep, stale_end = os.pipe()  # we keep the read end, the reply carries the write end
                stale = {"seq": seq - 1, "error": {"kind": "internal", "message": "late", "path": ""}}
                socket.send_fds(theirs, [json.dumps(stale).encode()], [stale_end])
                os.close(stale_end)
                socket.send_fds(theirs, [json.dumps({"seq": seq, "result": request["op"]}).encode()], [])
                stale_ends.append(stale_keep)

        stale_ends: list[int] = []
        nursery.start_soon(play_forker)
        assert (await forker.call("first", {}))[0] == "first"
        assert (await forker.call("second", {}))[0] == "second"
    for keep in stale_ends:  # the daemon closed the stale replies' fds: their pipes are widowed
        os.set_blocking(keep, False)  # (a write end still open would raise, not hang)
        assert os.read(keep, 1) == b""
        os.close(keep)
    ours.close()
    theirs.close()


PIDS = Path("/sys/fs/cgroup/pids")


@pytest.mark.skipif(not PIDS.is_dir(), reason="needs the cgroup v1 pids controller")
async def test_when_no_worker_can_be_forked_the_request_fails_and_the_forker_goes_on() -> None:
    forker = Forker(HANDLERS, spare_idle=0.2)
    forker.start()
    group = PIDS / f"railcar-test-forker-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        assert eventually(lambda: len(_workers_of(forker.pid)) == 1)
        for pid in (forker.pid, *_workers_of(forker.pid)):
            (group / "cgroup.procs").write_text(str(pid))
        (group / "pids.max").write_text("1")  # room for the forker alone: the spare (already there) serves once
        first, _ = await forker.call("touch", {})  # the spare serves; no new one can be forked
        with pytest.raises(ForkerError, match="worker could not be forked") as info:
            await forker.call("touch", {})
        assert info.value.kind == "internal"
        (group / "pids.max").write_text("max")
        second, _ = await forker.call("touch", {})
        assert second["pid"] not in (first["pid"], forker.pid)
    finally:
        forker.close()
        _, status = os.waitpid(forker.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert eventually(lambda: (group / "cgroup.procs").read_text() == "")
        group.rmdir()


def _where(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    with open("/proc/self/oom_score_adj") as f:
        score = int(f.read())
    return {"pid": os.getpid(), "cwd": os.getcwd(), "env": os.environ.get("RAILCAR_TEST_ASSIGNED"), "oom": score}, []


def _fd_limit(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    return list(resource.getrlimit(resource.RLIMIT_NOFILE)), []


async def test_a_worker_gives_what_it_starts_the_fd_limit_before_the_raise(monkeypatch) -> None:
    """A daemon serves with its hard fd limit (fdlimit.raise_soft, as a Go shim raises its own); a
    worker, whose children are the containers' processes and hooks, takes the old soft limit back
    first, as Go gives a child its own (a container without rlimits then gets containerd's)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip("needs a hard fd limit above 256")
    monkeypatch.setattr(fdlimit, "_given", None)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))   # as containerd (Go 1.21+) starts a shim
    forker = Forker({"fd_limit": _fd_limit})
    try:
        fdlimit.raise_soft()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        pid = forker.start()
        served, _ = await forker.call("fd_limit", {})
        assert served == [256, hard]
        assert resource.prlimit(pid, resource.RLIMIT_NOFILE) == (hard, hard)   # the forker itself keeps it
    finally:
        forker.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _env_size(args: dict, fds: list[int]) -> tuple[object, list[int]]:
    return len(os.environ.get("RAILCAR_TEST_BIG", "")), []


@pytest.fixture
def spare_first():
    """A forker, and the spare worker it forked before the daemon knew its container."""
    f = Forker({"where": _where, "env_size": _env_size}, spare_idle=5)
    pid = f.start()
    assert eventually(lambda: len(_workers_of(pid)) == 1)
    [ready] = _workers_of(pid)
    yield f, ready
    f.close()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


async def test_a_worker_forked_before_the_daemon_adopted_its_container_serves_with_it(spare_first,
                                                                                    tmp_path: Path) -> None:
    """A spare daemon's forker was forked with the zygote's environment, working directory and OOM
    score; once the daemon has its container's, every worker takes them on, the spare forked before
    included (what it forks, a container without an oomScoreAdj of its own, inherits the score)."""
    forker, ready = spare_first
    with open("/proc/self/oom_score_adj") as f:
        score = min(int(f.read()) + 3, 1000)  # raising it needs no privilege
    forker.adopt({"RAILCAR_TEST_ASSIGNED": "yes"}, str(tmp_path), "t", False, score)
    first, _ = await forker.call("where", {})
    assert first == {"pid": ready, "cwd": str(tmp_path), "env": "yes", "oom": score}
    second, _ = await forker.call("where", {})
    assert second["pid"] not in (ready, forker.pid)
    assert (second["cwd"], second["env"], second["oom"]) == (str(tmp_path), "yes", score)
    assert os.readlink(f"/proc/{forker.pid}/cwd") != str(tmp_path)  # the forker itself stays as forked


async def test_a_working_directory_that_is_gone_is_replaced_by_the_root(spare_first, tmp_path: Path) -> None:
    """(The bundle of a grouped daemon's first container, deleted.) The request is still served."""
    forker, _ = spare_first
    forker.adopt({"RAILCAR_TEST_ASSIGNED": "yes"}, str(tmp_path / "gone"), "t", False, None)
    served, _ = await forker.call("where", {})
    assert (served["cwd"], served["env"]) == ("/", "yes")


async def test_a_context_too_big_for_the_shared_pages_is_refused(spare_first, tmp_path: Path) -> None:
    forker, _ = spare_first
    with pytest.raises(ForkerError, match="context takes"):
        forker.adopt({"RAILCAR_TEST_BIG": "x" * (1 << 20)}, str(tmp_path), "t", False, None)
    forker.adopt({"RAILCAR_TEST_BIG": "x" * (600 << 10)}, str(tmp_path), "t", False, None)
    for _ in range(2):
        assert (await forker.call("env_size", {}))[0] == 600 << 10
